"""Slurm cluster benchmark: ``rayinfra slurm up`` against a plain hand-written sbatch script.

    .venv/bin/python bench/bench_slurm.py [--runs 3]

Needs the real Slurm of this machine (``source .ci/setup.d/40-slurm.sh``). Each run, in turn:

* **hand-written**: an sbatch script of the usual shape (``ray start --head --block`` with an
  explicit node IP and GCS port, nothing else);
* **hand-written + rayinfra**: the same, then (a loop until the GCS port accepts, as such
  scripts do) ``rayinfra start --address ... --daemon`` with its gateway on ports picked by the
  bench;
* **slurm up**: ``rayinfra slurm up --nodes 1`` as a user runs it.

Both are measured from the submit with the same probe: a fresh Python process that
``ray.init`` s the head (once its GCS port accepts) and runs one task — "Ray usable". For
``slurm up`` also: the CLI's own wall time, which returns once rayinfra's gateway on the head
answers Health — "rayinfra usable" — against the hand-written script with rayinfra, probed with
``rayinfra status`` (exit 0 once the gateway answers). The node IP is 127.0.0.2 (cluster mode on
loopback).

Then ``gpu_slurm`` tasks (``--tasks``, default 10) through a private loopback runtime against
``sbatch`` + polling ``squeue`` by hand, both polling every ``POLL_S``: the latency of one trivial
job (submit -> its outcome known, one at a time) and the wall time of ``--tasks`` at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table
from rayinfra.head import session_members
from tests.conftest import free_port

NODE_IP = "127.0.0.2"
BIN = Path(sys.executable).parent
TARGET_RATIO = 1.2
PROBE = textwrap.dedent(
    """
    import sys, ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    assert ray.get(ray.remote(lambda: 1).options(num_cpus=0).remote()) == 1
    ray.shutdown()
    """
)
HAND_WRITTEN = """#!/bin/bash
#SBATCH --job-name=ray-by-hand
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --output={out}
set -e
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS
{ray} start --head --block --node-ip-address={ip} --port={port} --dashboard-port={dash} \\
  --temp-dir=/tmp/rh-$SLURM_JOB_ID --disable-usage-stats &
{then}
wait
"""
THEN_RAYINFRA = """until (exec 3<>/dev/tcp/{ip}/{port}) 2>/dev/null; do sleep 0.2; done
{rayinfra} start --address={ip}:{port} --daemon --state-dir=/tmp/rh-$SLURM_JOB_ID/state
"""


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 0.2):
            return True
    except OSError:
        return False


def probe(address: str, env: dict[str, str], deadline: float) -> None:
    """Until ``PROBE`` succeeds against ``address`` (a task ran); raises at the deadline."""
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, address], env=env, capture_output=True, timeout=120
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"Ray at {address} never became usable")


def sbatch(script: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable"],
        input=script,
        text=True,
        capture_output=True,
        cwd=cwd,
        env=env,
        check=True,
    ).stdout
    return out.strip().split(";")[0]


def wait_gone(job: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", job], capture_output=True, text=True, check=False
        ).stdout
        if not out.strip():
            return
        time.sleep(0.3)


def reap(temp_dir: str) -> None:
    """Kill what a hand-written job left behind: ``ray start --block`` in the background of a
    batch script can outlive ``scancel`` (re-parented out of the job), with its whole session.
    Only processes whose command line names this run's temp dir, and their sessions."""
    sessions = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(temp_dir.encode() in a for a in argv):
                sessions.add(os.getsid(int(entry.name)))
        except OSError:
            continue
    for sid in sessions:
        for pid in session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def hand_written(root: Path, env: dict[str, str], *, with_rayinfra: bool) -> float:
    """Seconds from the submit until Ray (or, ``with_rayinfra``, rayinfra's gateway) is usable."""
    port = free_port()
    gateway = {
        var: f"{NODE_IP}:{free_port()}"
        for var in (
            "ORCHESTRATOR_GRPC_ADDR",
            "ORCHESTRATOR_HTTP_ADDR",
            "ENV_MANAGER_GRPC_ADDR",
            "ENV_MANAGER_METRICS_ADDR",
        )
    }
    then = THEN_RAYINFRA.format(ip=NODE_IP, port=port, rayinfra=BIN / "rayinfra")
    script = HAND_WRITTEN.format(
        out=root / "hand-%j.out",
        ray=BIN / "ray",
        ip=NODE_IP,
        port=port,
        dash=free_port(),
        then=then if with_rayinfra else "",
    )
    t0 = time.monotonic()
    job = sbatch(script, root, {**env, **gateway} if with_rayinfra else env)
    try:
        while not port_open(NODE_IP, port):
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"hand-written job {job}: no GCS after 120 s")
            time.sleep(0.05)
        if not with_rayinfra:
            probe(f"{NODE_IP}:{port}", {**env, "RAY_AUTH_MODE": "disabled"}, t0 + 120)
            return time.monotonic() - t0
        status = [str(BIN / "rayinfra"), "status", "--state-dir", str(root / "client")]
        client = {**env, "RAYINFRA_GATEWAY": gateway["ORCHESTRATOR_GRPC_ADDR"]}
        while subprocess.run(status, env=client, capture_output=True, timeout=60).returncode:
            if time.monotonic() - t0 > 180:
                raise SystemExit(f"hand-written job {job}: rayinfra not up after 180 s")
            time.sleep(0.05)
        return time.monotonic() - t0
    finally:
        subprocess.run(["scancel", job], check=False)
        wait_gone(job)
        reap(f"/tmp/rh-{job}")
        shutil.rmtree(f"/tmp/rh-{job}", ignore_errors=True)


def slurm_up(root: Path, env: dict[str, str]) -> tuple[float, float]:
    """(Ray usable, rayinfra usable) seconds after the submit."""
    shared = root / "shared"
    config = root / "rayinfra.toml"
    config.write_text(f'[slurm]\nshared_dir = "{shared}"\nnode_ip = "{NODE_IP}"\n')
    ray_usable: list[float] = []
    t0 = time.monotonic()
    cli = subprocess.Popen(
        [str(BIN / "rayinfra"), "slurm", "up", "-c", str(config), "--timeout", "240"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def ray_probe() -> None:
        while time.monotonic() - t0 < 240:
            found = list(shared.glob("*/connection.json"))
            if found:
                try:
                    info = json.loads(found[0].read_text())
                except ValueError:
                    continue
                host, _, port = info["gcs_address"].rpartition(":")
                if port_open(host, int(port)):
                    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": info["ray_token_file"]}
                    probe(info["gcs_address"], {**env, **auth}, t0 + 240)
                    ray_usable.append(time.monotonic() - t0)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=ray_probe, daemon=True)
    thread.start()
    out, _ = cli.communicate(timeout=300)
    rayinfra_usable = time.monotonic() - t0
    thread.join(timeout=120)
    down = subprocess.run(
        [str(BIN / "rayinfra"), "slurm", "down", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if cli.returncode != 0 or not ray_usable or down.returncode != 0:
        raise SystemExit(f"slurm up failed:\n{out}\n{down.stdout}{down.stderr}")
    return ray_usable[0], rayinfra_usable


POLL_S = 0.5
JOB = (
    "#!/bin/bash\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=100M\n#SBATCH --output={out}\necho hi\n"
)
SLURM_TOML = f"""
[slurm]
task_values = {{ GPUS = 0, CPUS_PER_TASK = 1, MEMORY_GB = 1 }}
poll_interval_s = {POLL_S}
poll_max_interval_s = {POLL_S}
"""


def by_hand(root: Path, env: dict[str, str], n: int) -> tuple[list[float], float]:
    """(one-at-a-time latencies, wall of ``n`` at once) for sbatch + a squeue poll loop."""

    def submit() -> str:
        return sbatch(JOB.format(out=root / "raw-%j.out"), root, env)

    def wait(jobs: list[str]) -> None:
        left = set(jobs)
        while left:
            time.sleep(POLL_S)
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-j", ",".join(left), "-o", "%i %T"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            for line in out.splitlines():
                job, state = line.split()
                if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
                    left.discard(job)

    one = []
    for _ in range(n):
        t0 = time.monotonic()
        wait([submit()])
        one.append(time.monotonic() - t0)
    t0 = time.monotonic()
    wait([submit() for _ in range(n)])
    return one, time.monotonic() - t0


def through_rayinfra(n: int) -> tuple[list[float], float]:
    """The same through a private runtime: ``submit_task`` -> ``wait_task``."""
    from rayinfra import AgentInfraSync, runtime
    from rayinfra.config import load_config
    from tests.conftest import make_runtime_spec

    spec = make_runtime_spec("bs", SLURM_TOML)
    cfg = load_config(env=spec.env()).config
    runtime.start(cfg)
    try:
        infra = AgentInfraSync(config=cfg).start()
        payload = {"argv": ["echo", "hi"]}
        one = []
        for i in range(n):
            t0 = time.monotonic()
            infra.submit_task(f"one-{i}", payload, task_class="gpu_slurm")
            assert infra.wait_task(f"one-{i}", timeout=300)["status"] == "completed"
            one.append(time.monotonic() - t0)
        t0 = time.monotonic()
        infra.submit_tasks(
            [
                {"task_id": f"many-{i}", "payload": payload, "task_class": "gpu_slurm"}
                for i in range(n)
            ]
        )
        done = infra.wait_tasks([f"many-{i}" for i in range(n)], timeout=600)
        assert {d["status"] for d in done} == {"completed"}, done
        wall = time.monotonic() - t0
        infra.stop()
        return one, wall
    finally:
        runtime.stop(cfg.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)


def main(args: argparse.Namespace) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    hand, hand_infra, ray_up, infra_up = [], [], [], []
    for _ in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
        try:
            hand.append(hand_written(root, env, with_rayinfra=False))
            hand_infra.append(hand_written(root, env, with_rayinfra=True))
            r, i = slurm_up(root, env)
            ray_up.append(r)
            infra_up.append(i)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
    try:
        raw_one, raw_many = by_hand(root, env, args.tasks)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours_one, ours_many = through_rayinfra(args.tasks)
    h, hi, r, i = (statistics.median(v) for v in (hand, hand_infra, ray_up, infra_up))
    ro, oo = statistics.median(raw_one), statistics.median(ours_one)

    def ratio(a: float, b: float) -> tuple[str, str]:
        return f"{a / b:.2f}x", ("meets" if a / b <= TARGET_RATIO else "MISSES") + (
            f" <= {TARGET_RATIO}x"
        )

    print_table(
        "Slurm cluster",
        [
            ("hand-written sbatch: Ray usable", f"median {h:.1f} s", f"runs {_fmt(hand)}"),
            ("slurm up: Ray usable", f"median {r:.1f} s", f"runs {_fmt(ray_up)}"),
            ("slurm up / hand-written (Ray usable)", *ratio(r, h)),
            (
                "hand-written sbatch + rayinfra start: rayinfra usable",
                f"median {hi:.1f} s",
                f"runs {_fmt(hand_infra)}",
            ),
            (
                "slurm up: rayinfra usable (gateway Health)",
                f"median {i:.1f} s",
                f"runs {_fmt(infra_up)}; the CLI's wall time",
            ),
            ("slurm up / hand-written + rayinfra (rayinfra usable)", *ratio(i, hi)),
            (
                "one trivial job, sbatch + squeue poll by hand",
                f"median {ro:.2f} s",
                f"submit -> COMPLETED seen; poll {POLL_S} s",
            ),
            (
                "one trivial gpu_slurm task through rayinfra",
                f"median {oo:.2f} s",
                f"{oo / ro:.2f}x by hand; submit_task -> wait_task completed",
            ),
            (f"{args.tasks} jobs at once, by hand", f"{raw_many:.1f} s", "2 CPUs: 2 at a time"),
            (
                f"{args.tasks} gpu_slurm tasks at once, rayinfra",
                f"{ours_many:.1f} s",
                f"{ours_many / raw_many:.2f}x by hand",
            ),
        ],
    )


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10)
    main(parser.parse_args())

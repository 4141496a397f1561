"""The Slurm wrapper, the watcher and the cluster job against the real single-node Slurm that
.ci/setup.d/40-slurm.sh starts (no fakes). Slurm missing is a failure, not a skip."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayinfra.slurm.cli import (
    AsyncSlurmCli,
    Command,
    CommandResult,
    SlurmCli,
    run_command,
    run_command_async,
)
from rayinfra.slurm.errors import SlurmTimeoutError, SlurmUnavailableError
from rayinfra.slurm.render import ClusterJobSpec, render_cluster_job
from rayinfra.slurm.states import JobState, SlurmState, parse_sbatch_output
from rayinfra.slurm.watcher import JobWatcher
from tests.conftest import free_port
from tests.support.polling import wait_until
from tests.support.slurm import require_slurm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCli]:
    """The real Slurm; every job a test submits through it is cancelled at the end."""
    submitted: list[str] = []

    def recording(command: Command, timeout_s: float) -> CommandResult:
        result = run_command(command, timeout_s)
        if Path(command.argv[0]).name == "sbatch" and result.returncode == 0:
            submitted.append(parse_sbatch_output(result.stdout))
        return result

    cli = require_slurm(SlurmCli(runner=recording, timeout_s=20))
    yield cli
    for job_id in submitted:
        cli.cancel(job_id)


def wait_terminal(cli: SlurmCli, job_id: str, timeout_s: float = 30) -> JobState:
    def ended() -> JobState | None:
        state = cli.query([job_id])[job_id]
        return state if state.terminal else None

    return wait_until(f"job {job_id} to end", ended, timeout_s)


def test_a_job_completes_with_exit_code_0_and_its_stdout(slurm: SlurmCli, tmp_path: Path) -> None:
    job_id = slurm.submit(
        "#!/bin/bash\necho hello from $SLURM_JOB_ID\n",
        extra_args=[f"--output={tmp_path}/out-%j.txt", "--job-name=ri-ok"],
    )
    state = wait_terminal(slurm, job_id)
    assert (state.state, state.exit_code, state.signal) == (SlurmState.COMPLETED, 0, None)
    assert state.legacy_status == "completed" and state.name == "ri-ok"
    assert state.stdout == str(tmp_path / f"out-{job_id}.txt")
    assert Path(state.stdout).read_text() == f"hello from {job_id}\n"
    assert state.start_time is not None and state.end_time is not None
    shown = slurm.show_job(job_id)
    assert shown is not None and shown.stdout == state.stdout and shown.exit_code == 0


def test_a_job_exiting_3_failed_with_exit_code_3(slurm: SlurmCli, tmp_path: Path) -> None:
    script = tmp_path / "fail.sbatch"
    script.write_text("#!/bin/bash\necho about to fail\nexit 3\n")
    job_id = slurm.submit(script, extra_args=[f"--output={tmp_path}/%j.out"], cwd=tmp_path)
    state = wait_terminal(slurm, job_id)
    assert (state.state, state.exit_code, state.signal) == (SlurmState.FAILED, 3, None)
    assert state.reason == "NonZeroExitCode" and state.legacy_status == "failed"


def test_a_cancelled_job_is_cancelled(slurm: SlurmCli, tmp_path: Path) -> None:
    job_id = slurm.submit("#!/bin/bash\nsleep 300\n", extra_args=[f"--output={tmp_path}/%j"])
    wait_until(
        "the job to run",
        lambda: slurm.query([job_id])[job_id].state is SlurmState.RUNNING,
        timeout=20,
    )
    assert slurm.cancel(job_id) is True
    state = wait_terminal(slurm, job_id)
    assert state.state is SlurmState.CANCELLED and state.signal == 15
    assert state.legacy_status == "failed"  # what the original reported
    assert slurm.cancel(job_id) is False  # already ended: nothing signalled


def test_a_hostile_output_path_stays_a_path(slurm: SlurmCli, tmp_path: Path) -> None:
    canary = tmp_path / "canary"  # what an injected `touch "$CANARY"` would create
    odd = tmp_path / 'it\'s a "dir" $(touch "$CANARY") `touch $CANARY`; touch $CANARY'
    odd.mkdir()
    job_id = slurm.submit(
        "#!/bin/bash\necho written\n",
        extra_args=[f"--output={odd}/out %j.txt"],
        env={"CANARY": str(canary)},
    )
    state = wait_terminal(slurm, job_id)
    assert state.state is SlurmState.COMPLETED
    expected = odd / f"out {job_id}.txt"
    assert state.stdout == str(expected)
    assert expected.read_text() == "written\n"
    assert not canary.exists()


def test_jobs_squeue_forgot_come_from_the_job_history(slurm: SlurmCli, tmp_path: Path) -> None:
    """squeue keeps ended jobs for MinJobAge (300 s); the fallback reads the real jobcomp log
    (sacct -c), here by hiding squeue's answer."""
    job_id = slurm.submit("#!/bin/bash\nexit 4\n", extra_args=[f"--output={tmp_path}/%j"])
    wait_terminal(slurm, job_id)
    commands: list[str] = []

    def forgetful(command: Command, timeout_s: float) -> CommandResult:
        result = run_command(command, timeout_s)
        commands.append(" ".join(command.argv[:2]))
        if Path(command.argv[0]).name == "squeue":
            return CommandResult(result.argv, 0, "", "")
        return result

    cli = SlurmCli(runner=forgetful)
    states = cli.query([job_id, "999999"])
    assert (states[job_id].state, states[job_id].exit_code) == (SlurmState.FAILED, 4)
    assert states[job_id].source == "sacct"
    assert states["999999"].state is SlurmState.UNKNOWN
    # no accounting database here: `sacct` says so once, then only `sacct -c` is used
    assert commands == ["squeue -h", "sacct -P", "sacct -c"] and cli.history == "jobcomp"
    cli.query([job_id])
    assert commands[3:] == ["squeue -h", "sacct -c"]


def test_an_unreachable_controller_is_unavailable(tmp_path: Path) -> None:
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    bogus = tmp_path / "slurm.conf"
    bogus.write_text(conf + "\nSlurmctldPort=1\n")
    cli = SlurmCli(env={**os.environ, "SLURM_CONF": str(bogus)}, timeout_s=3)
    with pytest.raises(SlurmUnavailableError, match="slurmctld is not up"):
        cli.ping()
    # sbatch retries a dead controller for ~9 s: the timeout turns that into an error too
    with pytest.raises(SlurmTimeoutError, match="did not finish within 3 s"):
        cli.submit("#!/bin/bash\ntrue\n")
    with pytest.raises(SlurmUnavailableError, match=r"`.*sbatch` is not installed"):
        SlurmCli(bin_dir=tmp_path).submit("#!/bin/bash\ntrue\n")


async def test_the_watcher_sees_every_transition_with_one_squeue_per_poll(
    slurm: SlurmCli, tmp_path: Path
) -> None:
    calls: Counter[str] = Counter()

    async def counting(command: Command, timeout_s: float) -> CommandResult:
        calls[Path(command.argv[0]).name] += 1
        return await run_command_async(command, timeout_s)

    cli = AsyncSlurmCli(runner=counting)
    out = f"--output={tmp_path}/%j.out"
    ok = await cli.submit("#!/bin/bash\nsleep 1\n", extra_args=[out])
    bad = await cli.submit("#!/bin/bash\nsleep 1\nexit 3\n", extra_args=[out])
    long = await cli.submit("#!/bin/bash\nsleep 300\n", extra_args=[out])
    seen: dict[str, list[SlurmState]] = {ok: [], bad: [], long: []}

    async def on_change(state: JobState) -> None:
        seen[state.job_id].append(state.state)
        if state.job_id == long and state.state is SlurmState.RUNNING:
            await cli.cancel(long)

    watcher = JobWatcher(cli, on_change, min_interval_s=0.2, max_interval_s=1.0)
    for job_id in (ok, bad, long):
        watcher.track(job_id)
    task = asyncio.create_task(watcher.run())
    try:
        deadline = time.monotonic() + 60
        while watcher.tracked and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not watcher.tracked, f"jobs still tracked: {sorted(watcher.tracked)}; {seen}"
    finally:
        watcher.stop()
        await asyncio.wait_for(task, 10)
        await cli.cancel(long)
    assert seen[ok][-1] is SlurmState.COMPLETED and SlurmState.RUNNING in seen[ok]
    assert seen[bad][-1] is SlurmState.FAILED
    assert seen[long][-2:] == [SlurmState.RUNNING, SlurmState.CANCELLED]
    for states in seen.values():
        assert len(states) == len(set(states)), states  # each transition reported once
    assert calls["squeue"] == watcher.polls  # all tracked jobs in one call per poll
    assert calls["sacct"] == 0 and calls["scancel"] == 2  # the test's, and the clean-up's


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_the_cluster_job_starts_ray_and_rayinfra_and_cleans_up(tmp_path: Path) -> None:
    """``render_cluster_job(nodes=1)`` submitted for real: the connection file appears, the Ray
    head answers, rayinfra's control actors start on it (the default driver command); scancel
    stops every Ray process and removes the temp dir, the connection file and the job's token.

    Cluster mode on one machine: node IP 127.0.0.2 (Ray rewrites 127.0.0.1 unless the loopback
    setting is on, and with it on `rayinfra start --address` cannot attach), explicit ports."""
    venv_bin = Path(sys.executable).parent
    gateway = {
        k: f"127.0.0.1:{free_port()}"
        for k in (
            "orchestrator_grpc_addr",
            "orchestrator_http_addr",
            "env_manager_grpc_addr",
            "env_manager_http_addr",
        )
    }
    config = tmp_path / "rayinfra.toml"
    config.write_text(
        '[ray]\nauth_mode = "disabled"\n[gateway]\n'
        + "".join(f'{k} = "{v}"\n' for k, v in gateway.items())
    )
    ports = {
        "gcs-port": free_port(),
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
        "ray-client-server-port": free_port(),
    }
    ray_env = {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",
        "RAYINFRA_CONFIG": str(config),
    }
    spec = ClusterJobSpec(
        nodes=1,
        node_ip="127.0.0.2",
        ports=ports,
        include_dashboard=False,
        shared_dir=str(tmp_path / "shared"),
        output=str(tmp_path / "cluster-%j.out"),
        python=sys.executable,
        ray=str(venv_bin / "ray"),
        rayinfra=str(venv_bin / "rayinfra"),
        env=ray_env,
        driver_timeout_s=120,
    )
    # sbatch exports the submitter's environment: not the loopback setting of the test process
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    cli = require_slurm(SlurmCli(env=env))
    job_id = cli.submit(render_cluster_job(spec), cwd=tmp_path)
    connection = tmp_path / "shared" / job_id / "connection.json"
    temp_dir = Path(f"/tmp/ri-{job_id}")
    log = tmp_path / f"cluster-{job_id}.out"
    try:

        def running() -> dict[str, object] | None:
            state = cli.query([job_id])[job_id]
            assert not state.terminal, f"the cluster job ended: {state}\n{_tail(log)}"
            if not connection.exists():
                return None
            info: dict[str, object] = json.loads(connection.read_text())
            return info if info["rayinfra"] == "running" else None

        info = wait_until("the cluster's connection file to say rayinfra runs", running, 150, 0.5)
        gcs = f"127.0.0.2:{ports['gcs-port']}"
        assert info["gcs_address"] == gcs and info["job_id"] == job_id
        assert info["temp_dir"] == str(temp_dir) and temp_dir.is_dir()
        got_ports = info["ports"]
        assert isinstance(got_ports, dict) and {k: got_ports[k] for k in ports} == ports
        # the job's own Ray token, 0600 in its 0700 dir: a driver without it cannot attach
        token = Path(str(info["ray_token_file"]))
        assert token.parent == connection.parent and token.stat().st_mode & 0o777 == 0o600
        assert connection.parent.stat().st_mode & 0o777 == 0o700
        ray_env_cli = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        assert _ray_status(venv_bin / "ray", gcs, {**env, "RAY_AUTH_MODE": "disabled"}) is None
        status = wait_until(
            "`ray status` to answer",
            lambda: _ray_status(venv_bin / "ray", gcs, ray_env_cli),
            60,
            1.0,
        )
        assert "1 node_" in status or "Active:" in status
        head_args = [_cmdline(p) for p in _processes_under(temp_dir)]
        head_args = [a for a in head_args if "--head" in a]
        assert head_args, "no `ray start --head` process uses the job's temp dir"
        labels = next(a for a in head_args[0] if a.startswith("--labels="))
        for label in (
            "rayinfra.io/role=head",
            "rayinfra.io/accelerator-type=none",
            f"rayinfra.io/slurm-job={job_id}",
        ):
            assert label in labels.split("=", 1)[1].split(","), labels
        assert cli.cancel(job_id) is True
        final = wait_terminal(cli, job_id, timeout_s=60)
        assert final.state is SlurmState.CANCELLED
        wait_until(
            "the cluster's processes and temp dir to go",
            lambda: not _processes_under(temp_dir) and not temp_dir.exists(),
            60,
            0.5,
        )
        assert not connection.exists() and not token.exists()
    finally:
        cli.cancel(job_id)
        if not os.environ.get("KEEP_SLURM_LOGS"):
            shutil.rmtree(temp_dir, ignore_errors=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _ray_status(ray: Path, address: str, env: dict[str, str]) -> str | None:
    proc = subprocess.run(
        [str(ray), "status", "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout if proc.returncode == 0 and "Active:" in proc.stdout else None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _processes_under(path: Path) -> list[int]:
    """Pids with an argument that is ``path``, ends in ``=path`` or holds ``path/`` (the Ray
    processes of that temp dir; /tmp/ri-3 must not match /tmp/ri-35)."""
    p = str(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == p or a.endswith("=" + p) or p + "/" in a for a in args):
            pids.append(int(entry.name))
    return pids

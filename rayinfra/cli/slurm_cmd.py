"""``rayinfra slurm up|status|connect|down``: a Ray cluster with rayinfra on a Slurm allocation.

``up`` renders the cluster job (:func:`rayinfra.slurm.render.render_cluster_job`), submits it
and waits until rayinfra's gateway on the head answers Health; ``connect`` prints how to reach
it; ``down`` cancels the job and waits until it has cleaned up. The jobs' records live in the
shared cluster dir (``slurm.shared_dir``, :mod:`rayinfra.slurm.clusters`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from rayinfra.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigOption,
    StateDirOption,
    console,
    err_console,
    fail,
    load,
    print_json,
)
from rayinfra.cli.runtime_cmd import parse_labels

if TYPE_CHECKING:
    from rayinfra.config import RayinfraConfig
    from rayinfra.slurm.cli import SlurmCli
    from rayinfra.slurm.clusters import ClusterJob
    from rayinfra.slurm.states import JobState

app = typer.Typer(
    help="Ray clusters with rayinfra on Slurm allocations: up, status, connect, down.",
    no_args_is_help=True,
)

POLL_S = 0.2
LOG_TAIL_LINES = 30


def _slurm(cfg: RayinfraConfig) -> SlurmCli:
    from rayinfra.slurm.cli import SlurmCli

    return SlurmCli(bin_dir=cfg.slurm.bin_dir, timeout_s=cfg.slurm.command_timeout_s)


def _bin(name: str) -> str:
    """``name`` beside this Python (the same venv on every node), else from PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


@app.command("up")
def up(
    nodes: int | None = typer.Option(None, "--nodes", "-N", min=1, help="Slurm nodes."),
    partition: str | None = typer.Option(None, "--partition", "-p", help="Slurm partition."),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", min=0),
    cpus_per_node: int | None = typer.Option(None, "--cpus-per-node", min=1),
    time_limit: str | None = typer.Option(None, "--time", "-t", help="Time limit (Slurm format)."),
    account: str | None = typer.Option(None, "--account", "-A"),
    workers_per_node: int = typer.Option(
        1, "--workers-per-node", min=1, help="Ray nodes per Slurm node (they split its CPUs/GPUs)."
    ),
    interface: str | None = typer.Option(
        None, "--interface", help="Take each node's IP from this interface (e.g. ib0)."
    ),
    node_ip: str | None = typer.Option(
        None, "--node-ip", help="Force the node IP (single-node allocations)."
    ),
    labels: list[str] = typer.Option([], "--labels", help="Extra node labels k=v (repeatable)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the sbatch script; submit nothing."
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until rayinfra answers."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Seconds to wait (default: slurm.up_timeout_s)."
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Submit a Ray cluster job: the head (with rayinfra) on the first node, workers joining it
    on the others; wait until rayinfra's gateway answers, then print how to connect."""
    from rayinfra.errors import InvalidArgumentError
    from rayinfra.slurm import clusters
    from rayinfra.slurm.errors import SlurmError
    from rayinfra.slurm.render import ClusterJobSpec, render_cluster_job

    cfg = load(config, state_dir).config
    s = cfg.slurm
    env = {  # Ray's, as rayinfra's own heads get them
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": str(cfg.ray.drain_timeout_s),
        "RAY_USAGE_STATS_ENABLED": "1" if cfg.ray.usage_stats else "0",
    }
    if config is not None:  # the driver on the head reads the same config
        env["RAYINFRA_CONFIG"] = str(config.resolve())
    spec = ClusterJobSpec(
        nodes=nodes or s.nodes,
        partition=partition or s.partition,
        account=account or s.account,
        gpus_per_node=s.gpus_per_node if gpus_per_node is None else gpus_per_node,
        cpus_per_node=cpus_per_node or s.cpus_per_node,
        time=time_limit or s.time,
        output=str(s.cluster_dir / "rayinfra-cluster-%j.out"),
        shared_dir=str(s.cluster_dir),
        temp_root=str(s.temp_root),
        interface=interface or s.interface,
        node_ip=node_ip or s.node_ip,
        python=sys.executable,
        ray=_bin("ray"),
        rayinfra=_bin("rayinfra"),
        labels={**s.labels, **parse_labels(labels)},
        env=env,
        extra_sbatch=tuple(s.extra_sbatch),
        workers_per_node=workers_per_node,
        usage_stats=cfg.ray.usage_stats,
        stop_timeout_s=max(1, int(cfg.ray.stop_timeout_s)),
    )
    try:
        if dry_run:
            sys.stdout.write(render_cluster_job(spec))
            return
        job = clusters.submit(_slurm(cfg), spec, s.cluster_dir)
    except InvalidArgumentError as e:
        fail(str(e), EXIT_USAGE)
    except SlurmError as e:
        fail(str(e), EXIT_FAILURE)
    console.print(f"submitted cluster job {job.job_id} ({spec.nodes} node(s)); log {job.log}")
    if not wait:
        return
    job = _wait_usable(cfg, job, timeout or s.up_timeout_s)
    for line in clusters.connect_lines(job):
        console.print(line, soft_wrap=True)


def _wait_usable(cfg: RayinfraConfig, job: ClusterJob, timeout_s: float) -> ClusterJob:
    """Poll the job until rayinfra's gateway answers Health; fail with the log's tail if the
    job ends, leave it queued (and say so) if it is still pending at the timeout."""
    from rayinfra.slurm import clusters

    cli = _slurm(cfg)
    deadline = time.monotonic() + timeout_s
    shown = ""
    state: JobState | None = None
    while True:
        state = cli.query([job.job_id])[job.job_id]
        current = clusters.read_job(job.dir.parent, job.job_id) or job
        if state.terminal:
            err_console.print(_log_tail(current))
            fail(f"cluster job {job.job_id} ended ({state.state.value}) before rayinfra ran")
        what = f"{state.state.value}, rayinfra {current.rayinfra_state}"
        if what != shown:
            console.print(f"  job {job.job_id}: {what}")
            shown = what
        if current.rayinfra_state == "running" and _healthy(cfg, current):
            return current
        if time.monotonic() > deadline:
            fail(
                f"cluster job {job.job_id} is not usable after {timeout_s:g} s ({what}); it "
                f"stays submitted: `rayinfra slurm status`, `rayinfra slurm down {job.job_id}`"
            )
        time.sleep(POLL_S)


def _dial_for(cfg: RayinfraConfig, job: ClusterJob) -> Any:
    """The client settings of the cluster's gateway (its addresses and token file)."""
    gateway = job.gateway or {}
    from rayinfra.config_sources import dial_addr

    return dataclasses.replace(
        cfg.dial,
        gateway_addr=dial_addr(gateway["ORCHESTRATOR_GRPC_ADDR"]),
        orchestrator_grpc_addr=gateway["ORCHESTRATOR_GRPC_ADDR"],
        env_manager_grpc_addr=gateway["ENV_MANAGER_GRPC_ADDR"],
        token_path=Path(gateway["RAYINFRA_TOKEN_FILE"]),
        auth_token=None,
    )


def _healthy(cfg: RayinfraConfig, job: ClusterJob) -> bool:
    """Whether the cluster's gateway answers the Health RPC (with the job's token)."""
    if job.gateway is None:
        return False
    from rayinfra.client import AgentInfraSync
    from rayinfra.client.discovery import grpc_transport, listening

    settings = _dial_for(cfg, job)
    if not listening(settings.gateway_addr, 1.0):
        return False
    try:
        infra = AgentInfraSync(transport=grpc_transport(settings, settings.gateway_addr)).start()
    except (ConnectionError, RuntimeError):
        return False
    try:
        return bool(infra.health_check().get("healthy"))
    finally:
        infra.stop()


def _log_tail(job: ClusterJob) -> str:
    if job.log is None:
        return "(no log)"
    try:
        lines = Path(job.log).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {job.log})"
    return "\n".join([f"--- last lines of {job.log} ---", *lines[-LOG_TAIL_LINES:]])


def _pick(cfg: RayinfraConfig, job_id: str | None) -> ClusterJob:
    """The named cluster job, else the only one recorded; exit 2 naming the choices."""
    from rayinfra.slurm import clusters

    cluster_dir = cfg.slurm.cluster_dir
    if job_id is not None:
        job = clusters.read_job(cluster_dir, job_id)
        if job is None:
            known = ", ".join(j.job_id for j in clusters.list_jobs(cluster_dir)) or "none"
            fail(f"no cluster job {job_id} in {cluster_dir} (known: {known})", EXIT_USAGE)
        return job
    jobs = clusters.list_jobs(cluster_dir)
    if len(jobs) != 1:
        known = ", ".join(j.job_id for j in jobs) or "none"
        fail(f"name the cluster job: {len(jobs)} recorded in {cluster_dir} ({known})", EXIT_USAGE)
    return jobs[0]


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list of jobs)."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """List the cluster jobs `slurm up` submitted, with their Slurm state and rayinfra's."""
    from rayinfra.slurm import clusters
    from rayinfra.slurm.errors import SlurmError

    cfg = load(config, state_dir).config
    jobs = clusters.list_jobs(cfg.slurm.cluster_dir)
    try:
        states = _slurm(cfg).query([j.job_id for j in jobs]) if jobs else {}
    except SlurmError as e:
        fail(str(e), EXIT_FAILURE)
    rows = []
    for job in jobs:
        conn = job.connection or {}
        st = states[job.job_id]
        rows.append(
            {
                "job_id": job.job_id,
                "state": st.state.value,
                "nodes": job.record.get("nodes"),
                "head": conn.get("head_node"),
                "gcs_address": conn.get("gcs_address"),
                "gateway": (job.gateway or {}).get("ORCHESTRATOR_GRPC_ADDR"),
                "rayinfra": job.rayinfra_state if not st.terminal else "stopped",
                "log": job.log,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Slurm clusters ({cfg.slurm.cluster_dir})")
    for col in ("job", "state", "nodes", "head", "ray", "gateway", "rayinfra"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["job_id"],
            r["state"],
            str(r["nodes"]),
            r["head"] or "-",
            r["gcs_address"] or "-",
            r["gateway"] or "-",
            r["rayinfra"],
        )
    console.print(table)


@app.command("connect")
def connect(
    job_id: str | None = typer.Argument(None, help="Cluster job id (default: the only one)."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Print how to reach a running cluster: `ray:`, `gateway:`, `env manager:`, `http:`, then
    export lines (`eval "$(rayinfra slurm connect | grep ^export)"`)."""
    from rayinfra.slurm import clusters

    cfg = load(config, state_dir).config
    job = _pick(cfg, job_id)
    if job.rayinfra_state != "running":
        fail(f"cluster job {job.job_id} is not running rayinfra ({job.rayinfra_state})")
    for line in clusters.connect_lines(job):
        console.print(line, soft_wrap=True, markup=False)


@app.command("down")
def down(
    job_id: str | None = typer.Argument(None, help="Cluster job id (default: the only one)."),
    timeout: float = typer.Option(
        120.0, "--timeout", min=1, help="Seconds to wait for the job to end."
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Cancel a cluster job, wait until it has stopped Ray and cleaned up, forget it."""
    from rayinfra.slurm import clusters
    from rayinfra.slurm.errors import SlurmError

    cfg = load(config, state_dir).config
    job = _pick(cfg, job_id)
    cli = _slurm(cfg)
    try:
        cli.cancel(job.job_id)
        deadline = time.monotonic() + timeout
        while not (state := cli.query([job.job_id])[job.job_id]).terminal:
            if time.monotonic() > deadline:
                fail(f"cluster job {job.job_id} still {state.state.value} after {timeout:g} s")
            time.sleep(POLL_S)
    except SlurmError as e:
        fail(str(e), EXIT_FAILURE)
    left = [p.name for p in job.dir.glob("*.json") if p.name == clusters.CONNECTION_FILE]
    clusters.forget(job)
    console.print(f"cluster job {job.job_id} stopped ({state.state.value}); log {job.log}")
    if left:  # the job was killed before it could clean up (e.g. SIGKILL after KillWait)
        err_console.print("[yellow]warning:[/] the job did not remove its connection file")

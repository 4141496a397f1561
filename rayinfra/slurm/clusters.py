"""Ray clusters that ``rayinfra slurm up`` submitted, as the submitting side sees them.

Each cluster job has a directory ``<cluster dir>/<job id>/`` on the shared path (the
``slurm.shared_dir``, visible from every node):

* ``job.json`` — written here at submit: what was asked for, the script, the log path;
* ``job.sbatch`` — the script as submitted (``sbatch`` it again by hand if you like);
* ``connection.json`` — written by the job (``templates/cluster.sh``): the head's GCS address
  and ports, rayinfra's state (``starting``, ``running``), its gateway's addresses;
* ``ray_auth_token``, ``gateway.token`` — the job's tokens (the directory is 0700).

The job removes its connection file and tokens when it stops; :func:`forget` removes the rest.
Pure file handling plus the :class:`~rayinfra.slurm.cli.SlurmCli` it is given; no Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayinfra.slurm.render import ClusterJobSpec, render_cluster_job

if TYPE_CHECKING:
    from rayinfra.slurm.cli import SlurmCli

__all__ = [
    "CONNECTION_FILE",
    "RECORD_FILE",
    "SCRIPT_FILE",
    "ClusterJob",
    "connect_lines",
    "forget",
    "list_jobs",
    "read_job",
    "submit",
]

RECORD_FILE = "job.json"
SCRIPT_FILE = "job.sbatch"
CONNECTION_FILE = "connection.json"
_JOB_ID = re.compile(r"\d+(_\d+)?")
#: the gateway listen variables of the connection file, as ``slurm connect`` prints them
_GATEWAY_LINES = (
    ("gateway", "ORCHESTRATOR_GRPC_ADDR", " (orchestrator.v1)"),
    ("env manager", "ENV_MANAGER_GRPC_ADDR", " (env_manager.v1)"),
)


@dataclass(frozen=True)
class ClusterJob:
    """One cluster job's directory: its record and, while the job runs, its connection file."""

    job_id: str
    dir: Path
    record: dict[str, Any]
    connection: dict[str, Any] | None

    @property
    def rayinfra_state(self) -> str:
        """``submitted`` (no connection file yet, or the job ended), ``starting``,
        ``running`` or ``none`` (Ray only), as the job last wrote it."""
        return str(self.connection.get("rayinfra", "starting")) if self.connection else "submitted"

    @property
    def gateway(self) -> dict[str, str] | None:
        """rayinfra's listen addresses (the env var names) and ``RAYINFRA_TOKEN_FILE``."""
        if not self.connection or not isinstance(self.connection.get("gateway"), dict):
            return None
        return {str(k): str(v) for k, v in self.connection["gateway"].items()}

    @property
    def log(self) -> str | None:
        out = self.record.get("output")
        return str(out).replace("%j", self.job_id) if out else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def submit(
    cli: SlurmCli, spec: ClusterJobSpec, cluster_dir: Path, *, cwd: Path | None = None
) -> ClusterJob:
    """Render ``spec`` (its ``shared_dir`` must be ``cluster_dir``), submit it, and record the
    job in its directory. Raises ValueError naming a bad field before anything is submitted,
    :class:`~rayinfra.slurm.errors.SlurmError` if sbatch refuses."""
    if spec.shared_dir is None or Path(spec.shared_dir) != cluster_dir:
        raise ValueError(f"spec.shared_dir must be the cluster dir {cluster_dir}")
    script = render_cluster_job(spec)
    cluster_dir.mkdir(parents=True, exist_ok=True)
    job_id = cli.submit(script, cwd=cwd or cluster_dir)
    job_dir = cluster_dir / job_id
    job_dir.mkdir(mode=0o700, exist_ok=True)  # the job may have made it already
    (job_dir / SCRIPT_FILE).write_text(script)
    record = {
        "job_id": job_id,
        "submitted_at": time.time(),
        "script": str(job_dir / SCRIPT_FILE),
        **{k: v for k, v in asdict(spec).items() if k not in ("env",)},
    }
    _write_json(job_dir / RECORD_FILE, record)
    return ClusterJob(job_id, job_dir, record, None)


def read_job(cluster_dir: Path, job_id: str) -> ClusterJob | None:
    """The cluster job ``job_id`` recorded under ``cluster_dir``, or None."""
    if not _JOB_ID.fullmatch(job_id):
        return None
    job_dir = cluster_dir / job_id
    record = _read_json(job_dir / RECORD_FILE)
    if record is None:
        return None
    return ClusterJob(job_id, job_dir, record, _read_json(job_dir / CONNECTION_FILE))


def list_jobs(cluster_dir: Path) -> list[ClusterJob]:
    """Every cluster job recorded under ``cluster_dir``, oldest first."""
    try:
        names = [p.name for p in cluster_dir.iterdir() if p.is_dir() and _JOB_ID.fullmatch(p.name)]
    except OSError:
        return []
    jobs = [j for n in names if (j := read_job(cluster_dir, n)) is not None]
    return sorted(jobs, key=lambda j: [int(x) for x in j.job_id.split("_")])


def forget(job: ClusterJob) -> None:
    """Remove the job's directory (its record, script, and anything the job left)."""
    shutil.rmtree(job.dir, ignore_errors=True)


def connect_lines(job: ClusterJob) -> list[str]:
    """What ``rayinfra slurm connect`` prints for a running cluster: one line per endpoint,
    then the ``export`` lines a client needs (rayinfra's CLI and AgentInfra read
    ``RAYINFRA_GATEWAY`` and ``RAYINFRA_TOKEN_FILE``; the original gRPC client reads
    ``ORCHESTRATOR_GRPC_ADDR``; ``rayinfra services`` reads ``ENV_MANAGER_GRPC_ADDR``)."""
    conn = job.connection or {}
    lines = [f"ray: {conn.get('gcs_address', '-')}"]
    gateway = job.gateway
    if gateway is None:
        return lines
    for label, var, note in _GATEWAY_LINES:
        lines.append(f"{label}: {gateway[var]}{note}")
    lines.append(f"http: http://{gateway['ORCHESTRATOR_HTTP_ADDR']}")
    if conn.get("dashboard_url"):
        lines.append(f"dashboard: {conn['dashboard_url']}")
    exports = {
        "RAYINFRA_GATEWAY": gateway["ORCHESTRATOR_GRPC_ADDR"],
        "ORCHESTRATOR_GRPC_ADDR": gateway["ORCHESTRATOR_GRPC_ADDR"],
        "ENV_MANAGER_GRPC_ADDR": gateway["ENV_MANAGER_GRPC_ADDR"],
        "RAYINFRA_TOKEN_FILE": gateway["RAYINFRA_TOKEN_FILE"],
    }
    from shlex import quote

    lines += [f"export {k}={quote(v)}" for k, v in exports.items()]
    return lines

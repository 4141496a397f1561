"""``gpu_slurm`` tasks as Slurm jobs: the pure half of the bridge.

Which template a task's payload picks, the script rendered from it (validated at admission, so a
hostile payload is refused before anything is queued), the job record the scheduler keeps per
task (durable in the state store's kv namespace :data:`KV_NAMESPACE`, keyed by task id), how a
state the watcher reports changes the record, and how a finished job ends the task's attempt.
No Ray, asyncio or subprocess here: :mod:`rayinfra.actors.slurm_pool` runs the commands.

Templates (the original bridge's ``deploy/slurm`` rules, seed-system §4.7): ``payload.template``
names a file in ``slurm.template_dir``; else ``payload.method`` ``puffer_rl``/``rl`` picks
``train_puffer_rl.sbatch`` and ``ddp`` ``train_ddp.sbatch``, and anything else
``train_agent_methodologies.sbatch``, each when ``slurm.template_dir`` has it; else
``slurm.task_template``; else the template shipped with rayinfra (it runs ``payload.argv``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rayinfra.config import RayinfraConfig
from rayinfra.errors import InvalidArgumentError, NotTrustedError
from rayinfra.scheduling.limiter import Outcome
from rayinfra.slurm.render import default_task_template, render_task_job
from rayinfra.slurm.states import JobState, SlurmState, legacy_status
from rayinfra.slurm.validate import SIMPLE_NAME, matching

__all__ = [
    "EXECUTOR",
    "KV_NAMESPACE",
    "SHIPPED_TEMPLATE",
    "SlurmJob",
    "TaskScripts",
    "attempt_result",
    "pick_template",
]

KV_NAMESPACE = "slurm_jobs"
"""The state store's kv namespace of job records: task id -> :meth:`SlurmJob.to_dict`."""
EXECUTOR = "slurm"
"""The one executor name the scheduler sends ``gpu_slurm`` tasks to (each task: one job)."""
SHIPPED_TEMPLATE = "rayinfra:task.sbatch"
METHOD_TEMPLATES = {
    "puffer_rl": "train_puffer_rl.sbatch",
    "rl": "train_puffer_rl.sbatch",
    "ddp": "train_ddp.sbatch",
}
FALLBACK_TEMPLATE = "train_agent_methodologies.sbatch"
OUTPUT_TAIL_BYTES = 64 * 1024
"""How much of a job's stdout/stderr its task's result carries (the whole file stays)."""
UNKNOWN_AFTER_S = 120.0
"""A job no Slurm command has known for this long (purged, no accounting) ends its attempt."""


def pick_template(payload: Mapping[str, Any], config: RayinfraConfig) -> tuple[str, Path | None]:
    """``(name, path)`` of the template for ``payload`` (``path`` None: the shipped one).
    Raises InvalidArgumentError naming ``payload.template`` for a name that is not a plain file
    name or not in ``slurm.template_dir``."""
    slurm = config.slurm
    chosen = payload.get("template")
    if chosen is not None:
        name = matching("payload.template", chosen, SIMPLE_NAME, "must be a file name")
        if slurm.template_dir is None:
            raise InvalidArgumentError(
                "payload.template", "names a template, but slurm.template_dir is not configured"
            )
        path = slurm.template_dir / name
        if not path.is_file():
            raise InvalidArgumentError(
                "payload.template", f"{name!r} is not a file in {slurm.template_dir}"
            )
        return name, path
    if slurm.template_dir is not None:
        method = payload.get("method")
        name = METHOD_TEMPLATES.get(method, FALLBACK_TEMPLATE) if isinstance(method, str) else ""
        name = name or FALLBACK_TEMPLATE
        if (slurm.template_dir / name).is_file():
            return name, slurm.template_dir / name
    if slurm.task_template is not None:
        return slurm.task_template.name, slurm.task_template
    return SHIPPED_TEMPLATE, None


class TaskScripts:
    """Renders ``gpu_slurm`` task scripts under one config; templates are read once per change
    of their file (path, mtime)."""

    def __init__(self, config: RayinfraConfig) -> None:
        self.config = config
        self._texts: dict[Path, tuple[float, str]] = {}
        self.settings: dict[str, Any] = dict(config.slurm.task_values)
        if not {"LOG_DIR", "log_dir"} & set(self.settings):
            self.settings["LOG_DIR"] = str(config.slurm_output_dir)

    def _text(self, path: Path | None) -> str:
        if path is None:
            return default_task_template()
        try:
            mtime = path.stat().st_mtime
            cached = self._texts.get(path)
            if cached is None or cached[0] != mtime:
                cached = self._texts[path] = (mtime, path.read_text())
        except OSError as e:
            raise InvalidArgumentError("template", f"{path} cannot be read: {e}") from None
        return cached[1]

    def render(self, task_id: str, payload: Mapping[str, Any], *, trusted: bool) -> tuple[str, str]:
        """``(template name, script)``; InvalidArgumentError names the bad field. A Slurm job runs
        commands, so an untrusted caller is refused (:class:`NotTrustedError`)."""
        if not trusted:
            raise NotTrustedError(
                "task_class",
                "gpu_slurm tasks run commands as Slurm jobs; send the gateway's token",
            )
        name, path = pick_template(payload, self.config)
        return name, render_task_job(self._text(path), task_id, payload, self.settings)


def _iso(ts: float | None) -> str | None:
    """Unix seconds as RFC 3339 (the original's Go ``time.Time`` in JSON)."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


@dataclass
class SlurmJob:
    """The Slurm job of one task attempt, as the scheduler records it."""

    task_id: str
    job_id: str
    attempt: int
    template: str
    submit_time: float
    timeout_s: float | None = None  # the task's deadline, counted from the job's start
    state: str = SlurmState.PENDING.value
    raw_state: str = "PENDING"
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    node_list: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    timed_out: bool = False
    unknown_since: float | None = None
    settled: bool = False  # its attempt's end was handed to the scheduler
    previous: list[str] = field(default_factory=list)  # job ids of the task's earlier attempts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlurmJob:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def slurm_state(self) -> SlurmState:
        return SlurmState(self.state)

    @property
    def ended(self) -> bool:
        """The job ended, or Slurm forgot it for longer than :data:`UNKNOWN_AFTER_S`."""
        return self.slurm_state.terminal or self.error is not None

    def status_dict(self) -> dict[str, Any]:
        """``GET /slurm/status/{task_id}``: the original's ``{id, task_id, status, submit_time,
        start_time?, end_time?, exit_code?, error?}`` (times RFC 3339, ``status`` its strings)
        plus ``state`` (cancel, timeout, preemption... kept apart), ``raw_state``, ``signal``,
        ``attempt``, ``template``, ``node_list``, ``stdout``, ``stderr`` (paths)."""
        out: dict[str, Any] = {
            "id": self.job_id,
            "task_id": self.task_id,
            "status": legacy_status(self.raw_state),
            "submit_time": _iso(self.submit_time),
        }
        optional = {
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "exit_code": self.exit_code,
            "error": self.error or self.failure(),
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(
            state=self.state,
            raw_state=self.raw_state,
            signal=self.signal,
            attempt=self.attempt,
            template=self.template,
            node_list=self.node_list,
            stdout=self.stdout_path,
            stderr=self.stderr_path,
        )
        return out

    def observe(self, st: JobState, now: float) -> None:
        """Take what the watcher reported about this job."""
        if st.state is SlurmState.UNKNOWN:
            if self.unknown_since is None:
                self.unknown_since = now
            elif now - self.unknown_since > UNKNOWN_AFTER_S and self.error is None:
                self.error = (
                    f"Slurm job {self.job_id} is unknown to squeue and to the job history for "
                    f"over {UNKNOWN_AFTER_S:g}s ({st.reason or 'purged'}); its outcome is lost"
                )
            return
        self.unknown_since = None
        self.state, self.raw_state = st.state.value, st.raw_state
        self.exit_code, self.signal = st.exit_code, st.signal
        self.reason = st.reason or self.reason
        self.stdout_path = st.stdout or self.stdout_path
        self.stderr_path = st.stderr or self.stderr_path
        self.node_list = st.node_list or self.node_list
        if st.start_time is not None and self.slurm_state is not SlurmState.PENDING:
            self.start_time = float(st.start_time)
        if st.end_time is not None and st.terminal:
            self.end_time = float(st.end_time)
        if st.terminal and self.end_time is None:
            self.end_time = now

    def overdue(self, now: float) -> bool:
        """Running past the task's deadline (and not yet being cancelled for it)."""
        return (
            self.timeout_s is not None
            and self.slurm_state is SlurmState.RUNNING
            and self.start_time is not None
            and now - self.start_time > self.timeout_s
            and not self.timed_out
            and not self.cancel_requested
        )

    def failure(self) -> str | None:
        """Why the job did not succeed, or None (not ended, or completed with exit code 0)."""
        st = self.slurm_state
        if not st.terminal:
            return None
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"
        if self.signal:
            code += f", signal {self.signal}"
        what = f"Slurm job {self.job_id} {self.raw_state}"
        if st is SlurmState.COMPLETED:
            return None if not self.exit_code else f"{what} with {code}"
        if st is SlurmState.CANCELLED:
            if self.timed_out:
                return f"timed out after {self.timeout_s:g}s: rayinfra cancelled Slurm job {self.job_id}"
            if self.cancel_requested:
                return "cancelled"
            return f"{what}: cancelled outside rayinfra (scancel)"
        if st is SlurmState.TIMEOUT:
            return f"{what}: it reached its Slurm time limit"
        if st is SlurmState.OOM:
            return f"{what}: out of memory ({code})"
        if st in (SlurmState.PREEMPTED, SlurmState.NODE_FAIL):
            return f"{what}: {'preempted' if st is SlurmState.PREEMPTED else 'its node failed'}"
        return f"{what} ({code})" + (f": {self.reason}" if self.reason else "")

    def outcome(self) -> Outcome:
        """How the task's attempt ended (the scheduler's retry policy reads it)."""
        if self.error is not None:
            return Outcome.RESOURCE
        st = self.slurm_state
        if st is SlurmState.COMPLETED:
            return Outcome.FAILURE if self.exit_code else Outcome.SUCCESS
        if st is SlurmState.CANCELLED:
            return Outcome.TIMEOUT if self.timed_out else Outcome.CANCELLED
        if st is SlurmState.TIMEOUT:
            return Outcome.TIMEOUT
        if st in (SlurmState.PREEMPTED, SlurmState.NODE_FAIL):
            return Outcome.RESOURCE  # not the task's fault: it runs again
        return Outcome.FAILURE


def attempt_result(job: SlurmJob, stdout: str | None, stderr: str | None) -> dict[str, Any]:
    """The task's result for a finished job (``stdout``/``stderr``: the tails of its files)."""
    elapsed = None
    if job.start_time is not None and job.end_time is not None:
        elapsed = round(max(0.0, job.end_time - job.start_time), 3)
    return {
        "slurm_job_id": job.job_id,
        "state": job.state,
        "raw_state": job.raw_state,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "node_list": job.node_list,
        "elapsed_s": elapsed,
        "stdout_path": job.stdout_path,
        "stderr_path": job.stderr_path,
        "stdout": stdout,
        "stderr": stderr,
    }

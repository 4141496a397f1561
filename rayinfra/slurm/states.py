"""Slurm job states: parse what ``sbatch``, ``squeue``, ``scontrol`` and ``sacct`` print, and
normalise Slurm's many states into :class:`SlurmState`.

Pure: text in, values out; no subprocess. :mod:`rayinfra.slurm.cli` runs the commands with the
format arguments defined here (:data:`SQUEUE_FIELDS`, :data:`SACCT_FIELDS`) and hands their output
to these parsers.

The original bridge lumped cancel, timeout, preemption, node failure and OOM into ``"failed"``;
:func:`normalize_state` keeps them apart, and :func:`legacy_status` reproduces the original's
strings for the wire (``GET /slurm/status/{task_id}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any

from rayinfra.slurm.errors import SlurmParseError

__all__ = [
    "SACCT_FIELDS",
    "SQUEUE_FIELDS",
    "SQUEUE_SEPARATOR",
    "TERMINAL_STATES",
    "JobState",
    "SlurmState",
    "expand_filename_pattern",
    "legacy_status",
    "merge_known",
    "normalize_state",
    "parse_duration",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch_output",
    "parse_scontrol_job",
    "parse_scontrol_jobs",
    "parse_scontrol_kv",
    "parse_slurm_time",
    "parse_squeue_fields",
    "parse_squeue_line",
    "parse_wait_status",
    "sacct_format",
    "squeue_format",
    "unknown_job",
]


class SlurmState(str, Enum):
    """A job's state, normalised from Slurm's (the raw state is kept beside it)."""

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    NODE_FAIL = "node_fail"
    OOM = "oom"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (it will not change state again)."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        SlurmState.COMPLETED,
        SlurmState.FAILED,
        SlurmState.CANCELLED,
        SlurmState.TIMEOUT,
        SlurmState.PREEMPTED,
        SlurmState.NODE_FAIL,
        SlurmState.OOM,
    }
)

# Slurm's job states (full names as squeue %T / scontrol JobState print them, and the short codes
# of squeue %t), after upper-casing and dropping sacct's decorations ("CANCELLED by 0", "FAILED+").
_STATE_MAP: dict[str, SlurmState] = {}
for _state, _names in {
    SlurmState.PENDING: (
        "PENDING PD CONFIGURING CF REQUEUED RQ REQUEUE_FED RF REQUEUE_HOLD RH RESV_DEL_HOLD RD"
    ),
    SlurmState.RUNNING: "RUNNING R COMPLETING CG SIGNALING SI STAGE_OUT SO RESIZING RS",
    SlurmState.SUSPENDED: "SUSPENDED S STOPPED ST",
    SlurmState.COMPLETED: "COMPLETED CD",
    SlurmState.FAILED: "FAILED F BOOT_FAIL BF SPECIAL_EXIT SE",
    SlurmState.CANCELLED: "CANCELLED CA REVOKED RV",
    SlurmState.TIMEOUT: "TIMEOUT TO DEADLINE DL",
    SlurmState.PREEMPTED: "PREEMPTED PR",
    SlurmState.NODE_FAIL: "NODE_FAIL NF",
    SlurmState.OOM: "OUT_OF_MEMORY OOM",
}.items():
    for _name in _names.split():
        _STATE_MAP[_name] = _state
del _state, _names, _name


def _state_word(raw: str) -> str:
    """``"CANCELLED by 0"`` -> ``"CANCELLED"``, ``"FAILED+"`` -> ``"FAILED"`` (sacct's forms)."""
    words = raw.strip().split()
    return words[0].rstrip("+").upper() if words else ""


def normalize_state(raw: str) -> SlurmState:
    """Map a Slurm job state (``RUNNING``, ``R``, ``CANCELLED by 0``, ...) to a
    :class:`SlurmState`; anything unknown is :attr:`SlurmState.UNKNOWN`."""
    return _STATE_MAP.get(_state_word(raw), SlurmState.UNKNOWN)


_LEGACY_RUNNING = frozenset({"running", "r", "cg", "completing"})
_LEGACY_PENDING = frozenset({"pending", "pd", "configuring", "cf", "suspended", "s"})
_LEGACY_COMPLETED = frozenset({"completed", "cd", "done", "success", "ok"})
_LEGACY_FAILED_PREFIXES = ("preempt", "cancel", "fail")
_LEGACY_FAILED = frozenset({"timeout", "time_limit", "node_fail", "oom", "dead"})


def legacy_status(raw: str) -> str:
    """The status string the original bridge reported for a raw Slurm state (its
    ``normalizeState``): cancel, timeout, preemption, node failure and OOM are all ``"failed"``,
    anything it did not know passes through lower-cased."""
    s = raw.strip().lower()
    if s in _LEGACY_RUNNING:
        return "running"
    if s in _LEGACY_PENDING:
        return "pending"
    if s in _LEGACY_COMPLETED:
        return "completed"
    if s.startswith(_LEGACY_FAILED_PREFIXES) or s in _LEGACY_FAILED:
        return "failed"
    return s


@dataclass(frozen=True)
class JobState:
    """What is known about one Slurm job at one poll.

    ``exit_code``/``signal`` come from Slurm's ``ExitCode=a:b`` (or a raw wait status) and are
    None while the job has not ended or when unknown; ``signal`` is None when no signal ended it.
    Times are unix seconds (Slurm prints local time). ``source`` names the command that reported
    it (``squeue``, ``scontrol``, ``sacct``, or ``none`` for a job no command knows).
    """

    job_id: str
    state: SlurmState
    raw_state: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    node_list: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    run_time_s: int | None = None
    name: str | None = None
    source: str = "squeue"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.state.terminal

    @property
    def legacy_status(self) -> str:
        """The original bridge's status string for this job (:func:`legacy_status`)."""
        return legacy_status(self.raw_state)

    def transition_key(self) -> tuple[SlurmState, str, int | None, int | None]:
        """What a watcher compares between polls: a change here is a transition."""
        return (self.state, self.raw_state, self.exit_code, self.signal)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``state`` as its string value)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobState:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["state"] = SlurmState(fields["state"])
        return cls(**fields)


def unknown_job(job_id: str, reason: str) -> JobState:
    """A job that no command reports (purged from the controller, no accounting record)."""
    return JobState(job_id, SlurmState.UNKNOWN, "UNKNOWN", reason=reason, source="none")


# ------------------------------------------------------------------------------------------
# scalar fields

_EMPTY = frozenset({"", "N/A", "NONE", "(NULL)", "UNKNOWN"})


def _value(text: str | None) -> str | None:
    """None for Slurm's ways of saying "nothing" (``N/A``, ``None``, ``(null)``, ``Unknown``)."""
    if text is None:
        return None
    text = text.strip()
    return None if text.upper() in _EMPTY else text


def parse_slurm_time(text: str | None) -> int | None:
    """``2026-12-04T18:44:00`` (local time, as Slurm prints it) -> unix seconds; None for
    ``Unknown``/``None``/``N/A``. :class:`SlurmParseError` for anything else."""
    value = _value(text)
    if value is None:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise SlurmParseError(f"not a Slurm time: {text!r}") from None


_DURATION = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?")


def parse_duration(text: str | None) -> int | None:
    """Slurm's elapsed/run time (``M:SS``, ``H:MM:SS``, ``D-HH:MM:SS``) -> seconds; None when
    empty. :class:`SlurmParseError` for anything else."""
    value = _value(text)
    if value is None:
        return None
    m = _DURATION.fullmatch(value)
    if not m:
        raise SlurmParseError(f"not a Slurm duration: {text!r}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_exit_code(text: str | None) -> tuple[int | None, int | None]:
    """Slurm's ``ExitCode=a:b`` -> ``(exit code a, signal b or None when 0)``."""
    value = _value(text)
    if value is None:
        return None, None
    code, sep, sig = value.partition(":")
    try:
        exit_code = int(code)
        signal = int(sig) if sep else 0
    except ValueError:
        raise SlurmParseError(f"not a Slurm exit code (a:b): {text!r}") from None
    return exit_code, (signal or None)


def parse_wait_status(text: str | None) -> tuple[int | None, int | None]:
    """squeue's ``exit_code`` (a raw wait status: 768 = exit 3, 15 = SIGTERM) ->
    ``(exit code, signal or None)``, as :func:`parse_exit_code` would give for ``a:b``."""
    value = _value(text)
    if value is None:
        return None, None
    try:
        status = int(value)
    except ValueError:
        raise SlurmParseError(f"not a wait status: {text!r}") from None
    return (status >> 8) & 0xFF, (status & 0x7F) or None


_PATTERN = re.compile(r"%(\d*)([%AaJjNnstux])")


def expand_filename_pattern(
    pattern: str,
    *,
    job_id: str,
    name: str | None = None,
    user: str | None = None,
    node_list: str | None = None,
) -> str:
    """Expand sbatch's filename pattern (``%j``, ``%x``, ``%u``, ``%A``, ``%a``, ``%N``,
    ``%%``, with an optional zero-pad width such as ``%4j``) as Slurm does for a batch job.

    squeue prints ``--output`` as given; scontrol prints it expanded. Escapes whose value is not
    known here (``%N`` of a multi-node list, step and task ids) are left as they are.
    """
    master, _, index = job_id.partition("_")
    simple_node = node_list if node_list and not re.search(r"[\[,]", node_list) else None
    values = {
        "j": job_id if not index else master,
        "A": master,
        "a": index or None,
        "x": name,
        "u": user,
        "N": simple_node,
    }

    def sub(m: re.Match[str]) -> str:
        width, key = m.group(1), m.group(2)
        if key == "%":
            return "%"
        value = values.get(key)
        if value is None:
            return m.group(0)
        return value.zfill(int(width)) if width and value.isdigit() else value

    return _PATTERN.sub(sub, pattern) if "%" in pattern else pattern


# ------------------------------------------------------------------------------------------
# sbatch

_SUBMITTED = re.compile(r"^Submitted batch job (\d+)(?: on cluster \S+)?\s*$", re.M)
_PARSABLE = re.compile(r"^(\d+)(?:;\S+)?$")


def parse_sbatch_output(text: str) -> str:
    """The job id from sbatch's stdout (``Submitted batch job N``, or ``N[;cluster]`` with
    ``--parsable``); :class:`SlurmParseError` quoting the text otherwise."""
    m = _SUBMITTED.search(text)
    if m:
        return m.group(1)
    stripped = text.strip()
    m = _PARSABLE.fullmatch(stripped)
    if m:
        return m.group(1)
    raise SlurmParseError(f"sbatch printed no job id (expected 'Submitted batch job N'): {text!r}")


# ------------------------------------------------------------------------------------------
# squeue

#: ASCII unit separator: squeue's ``-O`` output is split on it (paths and names may hold ``|``)
SQUEUE_SEPARATOR = "\x1f"
#: squeue ``--Format`` fields :func:`parse_squeue_fields` expects, in this order
SQUEUE_FIELDS = (
    "JobID",
    "State",
    "exit_code",
    "Reason",
    "STDOUT",
    "STDERR",
    "NodeList",
    "StartTime",
    "EndTime",
    "TimeUsed",
    "Name",
    "UserName",
)


def squeue_format() -> str:
    """The ``squeue -O`` argument for :data:`SQUEUE_FIELDS` (no padding, separator-terminated)."""
    return ",".join(f"{field}:{SQUEUE_SEPARATOR}" for field in SQUEUE_FIELDS)


def parse_squeue_fields(text: str) -> dict[str, JobState]:
    """``squeue -h -t all -O <squeue_format()>`` output -> ``{job id: JobState}``.

    A line that does not split into :data:`SQUEUE_FIELDS` is a :class:`SlurmParseError`.
    """
    jobs: dict[str, JobState] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(SQUEUE_SEPARATOR)
        if parts and parts[-1] == "":
            parts.pop()
        if len(parts) != len(SQUEUE_FIELDS):
            raise SlurmParseError(
                f"squeue line has {len(parts)} fields, expected {len(SQUEUE_FIELDS)}: {line!r}"
            )
        row = dict(zip(SQUEUE_FIELDS, (p.strip() for p in parts), strict=True))
        job_id = row["JobID"]
        state = normalize_state(row["State"])
        pending = state is SlurmState.PENDING
        exit_code, signal = parse_wait_status(row["exit_code"]) if state.terminal else (None, None)
        name, user, nodes = _value(row["Name"]), _value(row["UserName"]), _value(row["NodeList"])
        paths = {
            key: expand_filename_pattern(v, job_id=job_id, name=name, user=user, node_list=nodes)
            if (v := _value(row[key])) is not None
            else None
            for key in ("STDOUT", "STDERR")
        }
        jobs[job_id] = JobState(
            job_id=job_id,
            state=state,
            raw_state=row["State"],
            exit_code=exit_code,
            signal=signal,
            reason=_value(row["Reason"]),
            stdout=paths["STDOUT"],
            stderr=paths["STDERR"],
            node_list=nodes,
            # a pending job's StartTime is the scheduler's estimate, not a start
            start_time=None if pending else parse_slurm_time(row["StartTime"]),
            end_time=parse_slurm_time(row["EndTime"]) if state.terminal else None,
            run_time_s=parse_duration(row["TimeUsed"]),
            name=name,
            source="squeue",
        )
    return jobs


def parse_squeue_line(line: str) -> JobState:
    """One line of ``squeue -h -o '%i|%T|%M|%R'`` (id, state, time used, reason or node list)."""
    parts = line.strip().split("|", 3)
    if len(parts) != 4 or not parts[0]:
        raise SlurmParseError(f"not a squeue '%i|%T|%M|%R' line: {line!r}")
    job_id, raw, used, reason_or_nodes = parts
    state = normalize_state(raw)
    # %R is "(Reason)" for a pending job and the node list once it runs
    reason, nodes = None, None
    if reason_or_nodes.startswith("(") and reason_or_nodes.endswith(")"):
        reason = _value(reason_or_nodes[1:-1])
    else:
        nodes = _value(reason_or_nodes)
    return JobState(
        job_id=job_id,
        state=state,
        raw_state=raw,
        reason=reason,
        node_list=nodes,
        run_time_s=parse_duration(used),
        source="squeue",
    )


# ------------------------------------------------------------------------------------------
# scontrol show job -o

# a key starts a token: a space, then a capitalised word of letters, digits, ':' '/' '_', then '='
_SCONTROL_KEY = re.compile(r" (?=[A-Z][A-Za-z0-9_:/]*=)")


def parse_scontrol_kv(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` line -> ``{key: value}``.

    Values may contain spaces (job names, paths): a token starts only where a space is followed
    by ``Key=``, so a value that itself contains `` Key=`` is split there (Slurm's format is
    ambiguous in that case).
    """
    out: dict[str, str] = {}
    for token in _SCONTROL_KEY.split(line.strip()):
        key, sep, value = token.partition("=")
        if sep and key:
            out[key] = value
    return out


def parse_scontrol_job(line: str) -> JobState:
    """One ``scontrol show job -o`` line -> :class:`JobState` (JobState, ExitCode, Reason,
    StdOut, StdErr, NodeList, RunTime, StartTime, EndTime, JobName)."""
    kv = parse_scontrol_kv(line)
    job_id, raw = kv.get("JobId"), kv.get("JobState")
    if not job_id or raw is None:
        raise SlurmParseError(f"not a 'scontrol show job -o' line: {line!r}")
    state = normalize_state(raw)
    exit_code, signal = parse_exit_code(kv.get("ExitCode")) if state.terminal else (None, None)
    return JobState(
        job_id=job_id,
        state=state,
        raw_state=raw,
        exit_code=exit_code,
        signal=signal,
        reason=_value(kv.get("Reason")),
        stdout=_value(kv.get("StdOut")),
        stderr=_value(kv.get("StdErr")),
        node_list=_value(kv.get("NodeList")),
        start_time=None if state is SlurmState.PENDING else parse_slurm_time(kv.get("StartTime")),
        end_time=parse_slurm_time(kv.get("EndTime")) if state.terminal else None,
        run_time_s=parse_duration(kv.get("RunTime")),
        name=_value(kv.get("JobName")),
        source="scontrol",
    )


def parse_scontrol_jobs(text: str) -> dict[str, JobState]:
    """Every line of ``scontrol show job -o [ID]`` output -> ``{job id: JobState}``."""
    jobs = [parse_scontrol_job(line) for line in text.splitlines() if line.strip()]
    return {job.job_id: job for job in jobs}


# ------------------------------------------------------------------------------------------
# sacct (accounting database, or -c: the filetxt job-completion log)

#: sacct ``-o`` fields :func:`parse_sacct` expects (all also in the jobcomp/filetxt log)
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "NodeList", "Start", "End", "Elapsed")


def sacct_format() -> str:
    """The ``sacct -o`` argument for :data:`SACCT_FIELDS`."""
    return ",".join(SACCT_FIELDS)


def parse_sacct(text: str, *, strict: bool = True) -> dict[str, JobState]:
    """``sacct -P -n -o <sacct_format()>`` output -> ``{job id: JobState}``.

    Step rows (``123.batch``, ``123.0``) are skipped; when a job has several rows (requeued),
    the last one wins. Fields are ``|``-separated, so a job name holding ``|`` garbles its line:
    a :class:`SlurmParseError`, or with ``strict=False`` the line is skipped (the job stays
    unknown rather than wrong; the jobcomp log ``sacct -c`` reads mangles names with spaces too).
    """
    jobs: dict[str, JobState] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != len(SACCT_FIELDS):
            if not strict:
                continue
            raise SlurmParseError(
                f"sacct line has {len(parts)} fields, expected {len(SACCT_FIELDS)}: {line!r}"
            )
        row = dict(zip(SACCT_FIELDS, parts, strict=True))
        job_id = row["JobID"].strip()
        if "." in job_id or not job_id:
            continue
        state = normalize_state(row["State"])
        exit_code, signal = parse_exit_code(row["ExitCode"]) if state.terminal else (None, None)
        jobs[job_id] = JobState(
            job_id=job_id,
            state=state,
            raw_state=row["State"].strip(),
            exit_code=exit_code,
            signal=signal,
            node_list=_value(row["NodeList"]),
            start_time=parse_slurm_time(row["Start"]),
            end_time=parse_slurm_time(row["End"]) if state.terminal else None,
            run_time_s=parse_duration(row["Elapsed"]),
            name=_value(row["JobName"]),
            source="sacct",
        )
    return jobs


def merge_known(newer: JobState, older: JobState | None) -> JobState:
    """``newer`` with the fields it lacks (None) filled from ``older`` of the same job: sacct
    has no stdout path or reason, so a job that moves from squeue to sacct keeps them."""
    if older is None or older.job_id != newer.job_id:
        return newer
    missing = {
        name: getattr(older, name)
        for name in ("reason", "stdout", "stderr", "node_list", "start_time", "name")
        if getattr(newer, name) is None and getattr(older, name) is not None
    }
    return replace(newer, **missing) if missing else newer

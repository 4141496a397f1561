"""The one wrapper around Slurm's commands: ``sbatch``, ``squeue``, ``sacct``, ``scontrol``,
``scancel``. Nothing else in rayinfra runs them.

Every command is an argv list (never a shell string) with a timeout. A failure is typed:
:class:`~rayinfra.slurm.errors.SlurmUnavailableError` when a command is not installed or the
controller does not answer (the message names which), :class:`SlurmCommandError` with the argv,
exit code and stderr otherwise. ``on_unavailable`` hears of every
:class:`~rayinfra.slurm.errors.SlurmUnavailableError` before it is raised, whichever command
found it (the runtime invalidates its cached ``scontrol ping`` answer with it).

Each operation is written once, as a generator that yields :class:`Command` s and receives their
:class:`CommandResult` s; :class:`SlurmCli` runs it with :mod:`subprocess` (CLI commands) and
:class:`AsyncSlurmCli` with :func:`asyncio.create_subprocess_exec` (actors). Both take a
``runner`` so tests can count or fake the commands.

State of many jobs costs one ``squeue -t all`` call (it also lists jobs that ended less than
``MinJobAge``, 300 s by default, ago, with their exit codes). Jobs squeue no longer knows are
looked up in one ``sacct`` call: the accounting database when there is one, else ``sacct -c``
(the ``jobcomp/filetxt`` log); jobs neither knows come back as
:attr:`~rayinfra.slurm.states.SlurmState.UNKNOWN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, TypedDict, TypeVar, cast

from rayinfra.slurm.errors import (
    SlurmCommandError,
    SlurmTimeoutError,
    SlurmUnavailableError,
)
from rayinfra.slurm.states import (
    JobState,
    parse_sacct,
    parse_sbatch_output,
    parse_scontrol_jobs,
    parse_squeue_fields,
    sacct_format,
    squeue_format,
    unknown_job,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AsyncSlurmCli",
    "Command",
    "CommandResult",
    "HistorySource",
    "SlurmCli",
    "SubmitOptions",
    "UnavailableHook",
    "run_command",
    "run_command_async",
    "validate_job_id",
]

T = TypeVar("T")
#: called with every :class:`SlurmUnavailableError` a command is about to raise
UnavailableHook = Callable[[SlurmUnavailableError], None]

DEFAULT_TIMEOUT_S = 30.0
#: where finished jobs squeue no longer lists are looked up: ``auto`` tries the accounting
#: database (``sacct``) and, if accounting storage is disabled, the jobcomp log (``sacct -c``)
HistorySource = Literal["auto", "sacct", "jobcomp", "none"]

_JOB_ID = re.compile(r"\d+(?:_\d+)?(?:\+\d+)?")
_SIGNAL = re.compile(r"(?:SIG)?[A-Z][A-Z0-9]*|\d{1,2}")
# what Slurm's commands print when slurmctld (or munge, or slurm.conf) is not there
_UNAVAILABLE = (
    "Unable to contact slurm controller",
    "Socket timed out on send/recv",
    "Zero Bytes were transmitted or received",
    "Communication connection failure",
    "Connection refused",
    "Could not establish a configuration source",
    "Unable to establish controller machine",
    "Munge encode failed",
    "Invalid authentication credential",
)
_ACCOUNTING_DISABLED = "accounting storage is disabled"
_INVALID_JOB = "Invalid job id specified"
_ALREADY_DONE = "already completing or completed"


@dataclass(frozen=True)
class Command:
    """One command to run: argv (``argv[0]`` a bare Slurm command name), optional stdin text,
    working directory and environment (None: the caller's)."""

    argv: tuple[str, ...]
    stdin: str | None = None
    cwd: str | None = None
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its argv, exit code, stdout and stderr (text)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


SyncRunner = Callable[[Command, float], CommandResult]
AsyncRunner = Callable[[Command, float], Awaitable[CommandResult]]
Operation = Generator[Command, CommandResult, T]
Runner = TypeVar("Runner", SyncRunner, AsyncRunner)


class SubmitOptions(TypedDict, total=False):
    """:meth:`SlurmCli.submit`'s options: ``extra_args``, sbatch options (``--output=...``;
    never a shell string); ``cwd``; ``env``, added to the environment sbatch sees (and, by
    default, the job too)."""

    extra_args: Sequence[str]
    cwd: str | os.PathLike[str] | None
    env: Mapping[str, str] | None


def _not_installed(name: str, env: Mapping[str, str] | None) -> SlurmUnavailableError:
    path = (env if env is not None else os.environ).get("PATH", "")
    return SlurmUnavailableError(
        f"`{name}` is not installed (not found on PATH={path}); install Slurm's client commands "
        "(Debian: slurm-client) or point rayinfra at the directory that holds them"
    )


def run_command(command: Command, timeout_s: float) -> CommandResult:
    """Run ``command`` with :mod:`subprocess`; :class:`SlurmUnavailableError` if the binary is
    missing, :class:`SlurmTimeoutError` past ``timeout_s`` (the process is killed)."""
    try:
        proc = subprocess.run(
            list(command.argv),
            input=command.stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=command.cwd,
            env=None if command.env is None else dict(command.env),
            stdin=None if command.stdin is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise _not_installed(command.argv[0], command.env) from None
    except subprocess.TimeoutExpired:
        raise SlurmTimeoutError(command.argv, timeout_s) from None
    return CommandResult(command.argv, proc.returncode, proc.stdout, proc.stderr)


async def run_command_async(command: Command, timeout_s: float) -> CommandResult:
    """:func:`run_command` on the event loop (:func:`asyncio.create_subprocess_exec`)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=command.cwd,
            env=None if command.env is None else dict(command.env),
        )
    except FileNotFoundError:
        raise _not_installed(command.argv[0], command.env) from None
    stdin = command.stdin.encode() if command.stdin is not None else None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise SlurmTimeoutError(command.argv, timeout_s) from None
    assert proc.returncode is not None
    return CommandResult(
        command.argv,
        proc.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


def validate_job_id(job_id: str) -> str:
    """``job_id`` if it is a Slurm job id (``123``, ``123_4``, ``123+1``); ValueError otherwise
    (an id is passed as an argument, so ``-x`` must never get through)."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r}: expected digits (or N_M / N+M)")
    return job_id


def _validate_extra_args(extra_args: Sequence[str]) -> list[str]:
    """Options for sbatch: each token an option (``--x=v``, ``-x``) or the value right after a
    short option (``-p debug``); a stray word would be taken as the script path."""
    out: list[str] = []
    prev_short = False
    for arg in extra_args:
        if not isinstance(arg, str) or "\0" in arg:
            raise ValueError(f"extra_args: {arg!r} is not a string argument")
        if arg.startswith("-") and arg not in ("-", "--"):
            prev_short = len(arg) == 2 and arg[1] != "-"
        elif prev_short:
            prev_short = False
        else:
            raise ValueError(
                f"extra_args: {arg!r} is not an option; write options as --name=value or -x value"
            )
        out.append(arg)
    return out


class _Operations(Generic[Runner]):
    """The Slurm operations, written once as command generators; subclasses run them."""

    runner: Runner

    def __init__(
        self,
        *,
        bin_dir: str | os.PathLike[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        history: HistorySource = "auto",
        runner: Runner | None = None,
        on_unavailable: UnavailableHook | None = None,
    ) -> None:
        """``bin_dir``: where the Slurm commands are (default: PATH); ``env``: the commands'
        environment (default: this process's; e.g. to set ``SLURM_CONF``); ``history``: where
        jobs squeue forgot are looked up (:data:`HistorySource`); ``runner``: what runs a
        command (default: the class's, with a subprocess); ``on_unavailable``: told of every
        :class:`SlurmUnavailableError` (a command missing, the controller unreachable or too
        slow) before it is raised, whichever operation ran into it."""
        self.bin_dir = None if bin_dir is None else Path(bin_dir)
        self.timeout_s = timeout_s
        self.env = None if env is None else dict(env)
        self.history: HistorySource = history
        self.on_unavailable = on_unavailable
        if runner is not None:
            self.runner = runner

    # -- helpers --------------------------------------------------------------------------

    def _unavailable(self, error: SlurmUnavailableError) -> None:
        if self.on_unavailable is not None:
            self.on_unavailable(error)

    def _cmd(
        self,
        name: str,
        *args: str,
        stdin: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Command:
        exe = str(self.bin_dir / name) if self.bin_dir is not None else name
        merged: dict[str, str] | None = None
        if env:
            merged = {**(self.env if self.env is not None else os.environ), **env}
        elif self.env is not None:
            merged = dict(self.env)
        return Command((exe, *args), stdin=stdin, cwd=cwd, env=merged)

    @staticmethod
    def _check(result: CommandResult) -> CommandResult:
        """``result`` if it succeeded; else the typed error (controller down or command error)."""
        if result.returncode == 0:
            return result
        text = f"{result.stderr}\n{result.stdout}"
        for marker in _UNAVAILABLE:
            if marker in text:
                detail = " ".join(text.split())
                raise SlurmUnavailableError(
                    f"the Slurm controller does not answer `{Path(result.argv[0]).name}` "
                    f"({detail}); is slurmctld running and SLURM_CONF right? "
                    "(`scontrol ping` tells)"
                )
        raise SlurmCommandError(result.argv, result.returncode, result.stderr)

    # -- operations -----------------------------------------------------------------------

    def _submit(
        self,
        script: str | os.PathLike[str],
        *,
        extra_args: Sequence[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Operation[str]:
        args = _validate_extra_args(extra_args)
        where = None if cwd is None else os.fspath(cwd)
        if isinstance(script, str):
            if not script.startswith("#!"):
                raise ValueError("script: batch script text must start with '#!' (sbatch needs it)")
            cmd = self._cmd("sbatch", *args, stdin=script, cwd=where, env=env)
        else:
            cmd = self._cmd("sbatch", *args, os.fspath(script), cwd=where, env=env)
        result = self._check((yield cmd))
        return parse_sbatch_output(result.stdout)

    def _query(self, job_ids: Iterable[str]) -> Operation[dict[str, JobState]]:
        ids = list(dict.fromkeys(validate_job_id(j) for j in job_ids))
        if not ids:
            return {}
        squeue = ("-h", "-t", "all", "-j", ",".join(ids), "-O", squeue_format())
        result = yield self._cmd("squeue", *squeue)
        if result.returncode != 0 and _INVALID_JOB in result.stderr:
            listed: dict[str, JobState] = {}  # one id, unknown to the controller
        else:
            listed = parse_squeue_fields(self._check(result).stdout)
        states = {i: listed[i] for i in ids if i in listed}
        missing = [i for i in ids if i not in listed]
        if missing:
            found = yield from self._history(missing)
            for job_id in missing:
                states[job_id] = found.get(job_id) or unknown_job(
                    job_id, f"neither squeue nor the job history ({self.history}) knows it"
                )
        return states

    def _history(self, job_ids: list[str]) -> Operation[dict[str, JobState]]:
        if self.history == "none":
            return {}
        base = ("-P", "-n", "-X", "-j", ",".join(job_ids), "-o", sacct_format())
        if self.history in ("auto", "sacct"):
            result = yield self._cmd("sacct", *base)
            if result.returncode == 0:
                self.history = "sacct"
                return parse_sacct(result.stdout)
            if self.history == "sacct" or _ACCOUNTING_DISABLED not in result.stderr:
                self._check(result)
            self.history = "jobcomp"
        result = yield self._cmd("sacct", "-c", *base)
        if result.returncode != 0 and not result.stdout.strip():
            self._check(result)
        # the jobcomp log is space-separated: a job name with spaces garbles that job's line
        return parse_sacct(result.stdout, strict=False)

    def _show_job(self, job_id: str) -> Operation[JobState | None]:
        result = yield self._cmd("scontrol", "show", "job", "-o", validate_job_id(job_id))
        if result.returncode != 0 and _INVALID_JOB in result.stderr:
            return None
        jobs = parse_scontrol_jobs(self._check(result).stdout)
        return jobs.get(job_id) or next(iter(jobs.values()), None)

    def _cancel(self, job_id: str, signal: str | None) -> Operation[bool]:
        args = ["-v"]
        if signal is not None:
            if not _SIGNAL.fullmatch(signal):
                raise ValueError(f"signal {signal!r}: expected a name (TERM, SIGUSR1) or number")
            args += [f"--signal={signal}", "--full"]
        result = self._check((yield self._cmd("scancel", *args, validate_job_id(job_id))))
        # scancel exits 0 for a job that already ended or is unknown; -v makes it say so
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        if any(_ALREADY_DONE in e or _INVALID_JOB in e for e in errors):
            return False
        if errors:
            raise SlurmCommandError(result.argv, result.returncode, result.stderr)
        return True

    def _ping(self) -> Operation[str]:
        result = yield self._cmd("scontrol", "ping")
        lines = [line.strip() for line in result.stdout.splitlines() if " is " in line]
        up = [line for line in lines if line.endswith("is UP")]
        if up:
            return up[0]
        if result.returncode != 0 and not lines:
            self._check(result)
        raise SlurmUnavailableError(
            f"slurmctld is not up: {'; '.join(lines) or result.stderr.strip() or '(no answer)'}; "
            "start it (slurmctld) or check SLURM_CONF"
        )


class SlurmCli(_Operations[SyncRunner]):
    """Slurm's commands, run synchronously (for CLI commands and scripts)."""

    runner = staticmethod(run_command)

    def _drive(self, op: Operation[T]) -> T:
        try:
            command = next(op)
            while True:
                command = op.send(self.runner(command, self.timeout_s))
        except StopIteration as stop:
            return cast(T, stop.value)
        except SlurmUnavailableError as e:
            self._unavailable(e)
            raise

    def submit(self, script: str | os.PathLike[str], **options: Unpack[SubmitOptions]) -> str:
        """Submit a batch script (text, given on stdin, or a path) and return its job id
        (``options``: :class:`SubmitOptions`)."""
        return self._drive(self._submit(script, **options))

    def query(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The state of every job in ``job_ids``: one ``squeue`` call, one ``sacct`` call for
        jobs squeue no longer lists; jobs nobody knows are ``UNKNOWN``."""
        return self._drive(self._query(job_ids))

    def show_job(self, job_id: str) -> JobState | None:
        """``scontrol show job -o ID`` (expanded StdOut/StdErr paths); None once the controller
        forgot the job."""
        return self._drive(self._show_job(job_id))

    def cancel(self, job_id: str, signal: str | None = None) -> bool:
        """``scancel`` the job (or send ``signal`` to the batch shell and every step); False if
        it had already ended or is unknown, True if it was signalled."""
        return self._drive(self._cancel(job_id, signal))

    def ping(self) -> str:
        """The controller's ``... is UP`` line; :class:`SlurmUnavailableError` if it is down."""
        return self._drive(self._ping())


class AsyncSlurmCli(_Operations[AsyncRunner]):
    """Slurm's commands on the event loop (for actors); the same methods as :class:`SlurmCli`."""

    runner = staticmethod(run_command_async)

    async def _drive(self, op: Operation[T]) -> T:
        try:
            command = next(op)
            while True:
                command = op.send(await self.runner(command, self.timeout_s))
        except StopIteration as stop:
            return cast(T, stop.value)
        except SlurmUnavailableError as e:
            self._unavailable(e)
            raise

    async def submit(self, script: str | os.PathLike[str], **options: Unpack[SubmitOptions]) -> str:
        """See :meth:`SlurmCli.submit`."""
        return await self._drive(self._submit(script, **options))

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """See :meth:`SlurmCli.query`."""
        return await self._drive(self._query(job_ids))

    async def show_job(self, job_id: str) -> JobState | None:
        """See :meth:`SlurmCli.show_job`."""
        return await self._drive(self._show_job(job_id))

    async def cancel(self, job_id: str, signal: str | None = None) -> bool:
        """See :meth:`SlurmCli.cancel`."""
        return await self._drive(self._cancel(job_id, signal))

    async def ping(self) -> str:
        """See :meth:`SlurmCli.ping`."""
        return await self._drive(self._ping())

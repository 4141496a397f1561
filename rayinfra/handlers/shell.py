"""The ``shell`` handler: the one wrapper around local task processes.

A task process is started from an argv list, never a shell string
(``Popen(argv, shell=False, start_new_session=True, stdin=DEVNULL)``), so it leads its own session
and process group. stdout and stderr go to files ``<output_dir>/<task_id>.stdout`` / ``.stderr``
(``ctx.output_dir``, or a private temporary directory), so large output never sits in memory.

On cancellation or when the deadline passes the whole process group (and any process of the
session that moved to another group) gets SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`.
After a normal exit, processes the command left behind in its group or session are SIGKILLed.

The result is ``{"exit_code", "stdout", "stderr"}``. Each text is the first
:data:`OUTPUT_CAP_BYTES` bytes of the stream decoded as UTF-8 (invalid bytes replaced); a longer
stream ends with the marker ``"\\n[... truncated, full output in <path>]"`` and the result carries
``"stdout_path"`` / ``"stderr_path"`` naming the file with the full text. Files in
``ctx.output_dir`` are always kept; a temporary directory is removed unless a stream was truncated.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from rayinfra import json_input
from rayinfra.handlers.context import HandlerError, TaskContext, TaskFailedError

__all__ = [
    "KILL_GRACE_S",
    "OUTPUT_CAP_BYTES",
    "kill_process_group",
    "live_session_members",
    "run_command",
    "shell_handler",
]

log = logging.getLogger(__name__)

OUTPUT_CAP_BYTES = 64 * 1024
"""Bytes of each stream returned inline in the result."""
KILL_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL when a task's processes are stopped."""
_POLL_MIN_S = 0.01
_POLL_MAX_S = 0.2
_REAP_WAIT_S = 1.0
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def shell_handler(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run ``payload["argv"]`` with optional ``cwd`` and ``env``; see the module docstring.

    Raises HandlerError for a bad payload or a missing executable, TaskFailedError (keeping the result)
    for a non-zero exit, TaskCancelledError on cancellation and TimeoutError past the deadline.
    """
    argv = _parse_argv(payload.get("argv"))
    cwd = _parse_cwd(payload.get("cwd"))
    env = _parse_env(payload.get("env"))
    return run_command(argv, ctx, cwd=cwd, env=env)


def run_command(
    argv: Sequence[str],
    ctx: TaskContext,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``argv`` as a task process for ``ctx`` and return its result dict.

    ``env`` is merged over :data:`os.environ`; the child also gets ``RAYINFRA_TASK_ID`` and
    ``RAYINFRA_TASK_ATTEMPT`` so a stray process can be traced to its task.
    """
    if not argv:
        raise HandlerError("payload.argv: must be a non-empty list of strings")
    started = time.monotonic()
    error = ctx.stop_error("shell task ", started)
    if error is not None:
        raise error
    out_dir, own_dir = _output_dir(ctx)
    stem = _safe_name(ctx.task_id)
    paths = {"stdout": out_dir / f"{stem}.stdout", "stderr": out_dir / f"{stem}.stderr"}
    keep_files = not own_dir
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["RAYINFRA_TASK_ID"] = ctx.task_id
    child_env["RAYINFRA_TASK_ATTEMPT"] = str(ctx.attempt)
    spawned: list[subprocess.Popen[bytes]] = []
    try:
        proc = _start(list(argv), cwd, child_env, paths["stdout"], paths["stderr"], spawned)
        log.debug("task %s: started pid %d: %r", ctx.task_id, proc.pid, list(argv))
        rc = _supervise(proc, ctx, started)
        result: dict[str, Any] = {"exit_code": rc}
        truncated_paths: dict[str, str] = {}
        for name, path in paths.items():
            text, truncated = _read_capped(path)
            result[name] = text
            if truncated:
                truncated_paths[f"{name}_path"] = str(path)
        result.update(truncated_paths)
        keep_files = keep_files or bool(truncated_paths)
    except BaseException:
        # An interrupt (Ray's cancel raises KeyboardInterrupt in the worker) can land after the
        # fork but before _supervise owns the child: inside Popen while it waits for exec, or
        # just after. An unreaped child's pid cannot have been reused, so its group is ours.
        for child in spawned:
            if child.returncode is None and getattr(child, "pid", None):
                _despite_interrupts(partial(kill_process_group, child.pid))
                _despite_interrupts(child.wait)
        raise
    finally:
        if own_dir and not keep_files:
            shutil.rmtree(out_dir, ignore_errors=True)
    if rc != 0:
        raise TaskFailedError(f"exit code {rc}", result=result)
    return result


def live_session_members(sid: int) -> list[int]:
    """Pids of processes, other than zombies, in process group ``sid`` or session ``sid``."""
    members: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != sid and os.getsid(pid) != sid:
                continue
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        members.append(int(pid))
    return members


def kill_process_group(pgid: int, grace_s: float | None = None) -> None:
    """Stop every process of group/session ``pgid``: SIGTERM, then SIGKILL after ``grace_s``.

    ``grace_s`` defaults to :data:`KILL_GRACE_S`. Returns once none is left (zombies aside) or,
    for processes that do not die even of SIGKILL at once (uninterruptible sleep), about a
    second after SIGKILL was sent.
    """
    if grace_s is None:
        grace_s = KILL_GRACE_S
    _signal_session(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live_session_members(pgid):
        if time.monotonic() >= deadline:
            log.debug("process group %d outlived SIGTERM by %.1fs; sending SIGKILL", pgid, grace_s)
            _signal_session(pgid, signal.SIGKILL)
            _wait_gone(pgid, _REAP_WAIT_S)
            return
        time.sleep(0.02)


def _signal_session(sid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``sid`` and to any process of session ``sid`` outside it."""
    try:
        os.killpg(sid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not permitted to signal process group %d", sid)
    for pid in live_session_members(sid):
        try:
            if os.getpgid(pid) == sid:
                continue
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning("not permitted to signal pid %d of session %d", pid, sid)


def _wait_gone(sid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while live_session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.02)


class _TrackedPopen(subprocess.Popen[bytes]):
    """A Popen that records itself before forking, so a caller interrupted inside ``__init__``
    (after the fork, while Popen waits for the exec) still knows the child's pid."""

    def __init__(self, spawned: list[subprocess.Popen[bytes]], *args: Any, **kwargs: Any) -> None:
        self._spawned = spawned
        super().__init__(*args, **kwargs)

    def _execute_child(self, *args: Any, **kwargs: Any) -> None:
        self._spawned.append(self)
        super()._execute_child(*args, **kwargs)  # type: ignore[misc]


def _start(
    argv: list[str],
    cwd: str | None,
    env: dict[str, str],
    stdout: Path,
    stderr: Path,
    spawned: list[subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    with stdout.open("wb") as out, stderr.open("wb") as err:
        try:
            return _TrackedPopen(
                spawned,
                argv,
                shell=False,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            if cwd is not None and exc.filename == cwd:
                raise HandlerError(f"payload.cwd: {cwd!r} is not a directory") from exc
            raise HandlerError(f"payload.argv: executable {argv[0]!r} not found") from exc
        except PermissionError as exc:
            if cwd is not None and exc.filename == cwd:
                raise HandlerError(f"payload.cwd: {cwd!r} is not accessible") from exc
            raise HandlerError(
                f"payload.argv: executable {argv[0]!r} cannot be run (permission denied)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise HandlerError(f"payload.argv: cannot run {argv[0]!r}: {exc}") from exc


def _supervise(proc: subprocess.Popen[bytes], ctx: TaskContext, started: float) -> int:
    """Wait for ``proc``; kill its group on cancel/deadline; kill leftovers after it exits."""
    pgid = proc.pid  # start_new_session: the child leads its own session and group
    interval = _POLL_MIN_S
    try:
        while not _exited(proc):
            error = ctx.stop_error("shell task ", started)
            if error is not None:
                kill_process_group(pgid)
                raise error
            remaining = ctx.remaining()
            wait = interval if remaining is None else min(interval, remaining)
            ctx.cancel_event.wait(max(wait, 0.0))
            interval = min(interval * 2, _POLL_MAX_S)
        # The leader exited but is not reaped yet (see _exited), so its pid still names the group:
        # nothing else can have taken it. Kill what it left behind.
        _signal_session(pgid, signal.SIGKILL)
        _wait_gone(pgid, _REAP_WAIT_S)
    finally:
        # an unexpected error or interrupt: never leave it running, even if more interrupts come
        _despite_interrupts(partial(_kill_unless_exited, proc, pgid))
        _despite_interrupts(proc.wait)
    return proc.returncode


def _kill_unless_exited(proc: subprocess.Popen[bytes], pgid: int) -> None:
    if not _exited(proc):
        kill_process_group(pgid)


def _despite_interrupts(step: Callable[[], object]) -> None:
    """Run a cleanup step to its end. Ray's cancel raises KeyboardInterrupt in the worker and
    repeats it every couple of seconds while the task runs; one landing inside a cleanup step
    must not abort it (the step simply starts over)."""
    while True:
        try:
            step()
            return
        except KeyboardInterrupt:
            continue


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once ``proc`` exited, leaving it unreaped (a zombie) where the platform allows."""
    if proc.returncode is not None:
        return True
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - platforms without waitid
        return proc.poll() is not None
    try:
        info = waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere; Popen.wait() then reports 0
        return True
    return info is not None


def _output_dir(ctx: TaskContext) -> tuple[Path, bool]:
    """The directory for output files and whether it is a private temporary one."""
    if ctx.output_dir is not None:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        return ctx.output_dir, False
    return Path(tempfile.mkdtemp(prefix="rayinfra-shell-")), True


def _safe_name(task_id: str) -> str:
    name = _UNSAFE_NAME.sub("_", task_id)[:200]
    return name if name.strip(".") else "task"


def _read_capped(path: Path) -> tuple[str, bool]:
    """The first OUTPUT_CAP_BYTES of ``path`` as text, with a marker if there was more."""
    size = path.stat().st_size
    with path.open("rb") as f:
        data = f.read(OUTPUT_CAP_BYTES)
    if size <= OUTPUT_CAP_BYTES:
        return data.decode("utf-8", errors="replace"), False
    # final=False drops a multi-byte character cut in half by the cap instead of mangling it
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)
    return f"{text}\n[... truncated, full output in {path}]", True


def _parse_argv(value: object) -> list[str]:
    if isinstance(value, str):
        try:
            value = json_input.loads(value)
        except ValueError as exc:
            raise HandlerError(
                "payload.argv: must be a list of strings or a JSON string of one "
                f"(never a shell command line), got {_short(value)}"
            ) from exc
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise HandlerError(
            f"payload.argv: must be a non-empty list of strings, got {_short(value)}"
        )
    if not value[0]:
        raise HandlerError("payload.argv: the executable (argv[0]) must not be empty")
    if any("\0" in a for a in value):
        raise HandlerError("payload.argv: arguments must not contain NUL characters")
    return list(value)


def _parse_cwd(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise HandlerError(f"payload.cwd: must be a non-empty string, got {_short(value)}")
    if not Path(value).is_dir():
        raise HandlerError(f"payload.cwd: {value!r} is not a directory")
    return value


def _parse_env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HandlerError(f"payload.env: must be an object of strings, got {_short(value)}")
    env: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise HandlerError(f"payload.env: invalid variable name {key!r}")
        if not isinstance(val, str) or "\0" in val:
            raise HandlerError(f"payload.env.{key}: must be a string without NUL characters")
        env[key] = val
    return env


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

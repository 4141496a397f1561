"""The supervisor of one process service: it outlives whoever started it.

Run as ``python -I /path/to/supervisor.py --dir DIR`` (or ``python -m
rayinfra.services.supervisor --dir DIR``). ``DIR/launch.json`` says what to run (written by
:class:`rayinfra.services.drivers.process.ProcessDriver`)::

    {"launch_id": "...", "service": "redis", "labels": {...}, "argv": ["redis-server", ...],
     "cwd": "/abs/dir", "env": {...}, "ports": [6379], "stop_timeout_s": 10.0}

The launcher starts it with ``start_new_session=True``; it forks once more and the launched
process exits at once, so the supervisor is re-parented to init (or the nearest subreaper), in a
session and process group of its own, with no parent to take it down: killing the launcher, or
the launcher's whole process group (what Ray does to a dying worker), leaves it and its service
running. The supervisor then

* starts ``argv`` (a list, never a shell string) in its own session and process group, with
  exactly ``env`` (the driver builds it: see :func:`child_env`), stdin from ``/dev/null``;
* owns the child's stdout/stderr pipes and appends every line to ``DIR/service.log`` as
  ``<RFC 3339 UTC timestamp with microseconds> <stdout|stderr> <line>`` (see
  :func:`format_log_line`), flushed per line; a partial last line is written at EOF, bytes that
  are not UTF-8 are replaced, lines longer than :data:`MAX_LINE_BYTES` are split;
* keeps ``DIR/instance.json`` (an :class:`InstanceRecord`, replaced atomically): ``starting``,
  then ``running`` with the child's pid and its start time (``/proc/<pid>/stat`` field 22, so a
  reused pid is told apart), then ``exited`` with the exit code, or ``failed`` with the reason
  when ``argv[0]`` cannot be executed;
* forwards SIGTERM, SIGINT and SIGHUP to the child's process group and exits once the child has
  exited and its pipes are drained (at most :data:`DRAIN_AFTER_EXIT_S` more when descendants
  keep them open).

Exit codes follow Docker: a child killed by signal N exits ``128 + N`` (SIGKILL: 137).

This module imports the standard library only: the supervisor stays small (it runs for as long
as its service does) and starts fast; the driver imports its pure helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, Literal, NamedTuple

LOG_NAME = "service.log"
RECORD_NAME = "instance.json"
LAUNCH_NAME = "launch.json"
SUPERVISOR_LOG_NAME = "supervisor.log"

#: a longer line is written as several lines of at most this many bytes
MAX_LINE_BYTES = 64 * 1024
#: once the child has exited, keep reading pipes its descendants hold open this long at most
DRAIN_AFTER_EXIT_S = 1.0

#: what a service inherits from the environment of the process that starts it; the spec's
#: ``env`` goes on top. Everything else (Ray's, the registry's, credentials) stays out.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")
INHERITED_ENV_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Stream = Literal["stdout", "stderr"]
RecordState = Literal["starting", "running", "exited", "failed"]
_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
_RECORD_STATES: tuple[RecordState, ...] = ("starting", "running", "exited", "failed")

log = logging.getLogger("rayinfra.supervisor")


# --------------------------------------------------------------------------- log lines (pure)


class LogEntry(NamedTuple):
    timestamp: float  # unix seconds
    stream: Stream
    message: str


def format_timestamp(ts: float) -> str:
    """``2024-05-01T12:00:00.123456Z``: RFC 3339, UTC, always six fraction digits."""
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> float | None:
    """The inverse of :func:`format_timestamp`; ``None`` if ``text`` is not one."""
    if len(text) != 27 or not text.endswith("Z") or text[10] != "T":
        return None
    try:
        dt = datetime.datetime.fromisoformat(text[:-1])
    except ValueError:
        return None
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def format_log_line(ts: float, stream: Stream, message: str) -> str:
    """One line of ``service.log``, newline included; ``message`` must not contain ``\\n``."""
    return f"{format_timestamp(ts)} {stream} {message}\n"


def parse_log_line(line: str) -> LogEntry | None:
    """A ``service.log`` line (with or without its ``\\n``); ``None`` if it is malformed."""
    line = line.removesuffix("\n")
    ts_text, sep, rest = line.partition(" ")
    stream, sep2, message = rest.partition(" ")
    if not sep or not sep2 or stream not in _STREAMS:
        return None
    ts = parse_timestamp(ts_text)
    if ts is None:
        return None
    return LogEntry(ts, "stdout" if stream == "stdout" else "stderr", message)


class LineSplitter:
    """Cuts a byte stream into lines (without ``\\n``) decoded as UTF-8 with replacement.

    Only ``\\n`` ends a line; a line longer than ``max_bytes`` is cut into pieces.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> list[str]:
        buf = self._buf
        buf += data
        out: list[str] = []
        start, end = 0, len(buf)
        while start < end:
            nl = buf.find(b"\n", start, start + self._max + 1)
            if nl >= 0:
                out.append(_decode(buf[start:nl]))
                start = nl + 1
            elif end - start > self._max:  # an overlong line: emit a full piece
                out.append(_decode(buf[start : start + self._max]))
                start += self._max
            else:
                break
        del buf[:start]
        return out

    def flush(self) -> list[str]:
        """The partial last line, if any (at EOF)."""
        if not self._buf:
            return []
        rest = _decode(self._buf)
        self._buf.clear()
        return [rest]


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- records (pure)


@dataclass(frozen=True)
class InstanceRecord:
    """``instance.json``: what the supervisor knows about its one child."""

    launch_id: str
    service: str
    argv: list[str]
    cwd: str
    supervisor_pid: int
    supervisor_start_ticks: int | None
    state: RecordState
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    stop_timeout_s: float = 10.0
    pid: int | None = None  # the child; also its process group id
    start_ticks: int | None = None  # /proc/<pid>/stat field 22 (clock ticks after boot)
    started_at: float | None = None  # unix seconds
    exit_code: int | None = None
    finished_at: float | None = None
    error: str | None = None  # state "failed": why argv could not be started
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceRecord:
        """Raise ``ValueError`` unless ``data`` is a record this version understands."""
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            rec = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise ValueError(f"not an instance record: {e}") from None
        if rec.state not in _RECORD_STATES:
            raise ValueError(f"unknown state {rec.state!r}")
        if not isinstance(rec.argv, list) or not isinstance(rec.labels, dict):
            raise ValueError("argv must be a list and labels a table")
        for name in ("supervisor_pid", "pid", "start_ticks", "exit_code"):
            value = getattr(rec, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer")
        return rec


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` (mode 0600) so readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_record(path: Path, record: InstanceRecord) -> None:
    write_json_atomic(path, record.to_json())


def read_record(path: Path) -> InstanceRecord | None:
    """The record at ``path``; ``None`` if there is none or it is not a valid record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return InstanceRecord.from_json(data) if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- processes (pure-ish)


def parse_proc_stat(text: str) -> tuple[str, int]:
    """``(state, start_ticks)`` from ``/proc/<pid>/stat``; the command name (field 2) may hold
    spaces and parentheses, so fields are counted after its last ``)``."""
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])  # field 3 and field 22


def proc_identity(pid: int) -> tuple[str, int] | None:
    """``(state, start_ticks)`` of ``pid``, ``None`` if no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return parse_proc_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None


def is_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start_ticks`` still runs (not a zombie,
    not another process that got the same pid)."""
    if pid is None or start_ticks is None or pid <= 0:
        return False
    ident = proc_identity(pid)
    return ident is not None and ident[1] == start_ticks and ident[0] not in ("Z", "X", "x")


def child_env(inherited: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """A service's environment: ``env`` on top of the allow-listed part of ``inherited``
    (:data:`INHERITED_ENV`, ``LC_*``), with a default ``PATH``."""
    out = {
        k: v
        for k, v in inherited.items()
        if k in INHERITED_ENV or k.startswith(INHERITED_ENV_PREFIXES)
    }
    out.setdefault("PATH", DEFAULT_PATH)
    out.update(env)
    return out


def exit_status(returncode: int) -> int:
    """A ``Popen.returncode`` as a shell would show it: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# --------------------------------------------------------------------------- the supervisor


class Supervisor:
    def __init__(self, directory: Path, launch: Mapping[str, Any]) -> None:
        self.dir = directory
        self.launch = launch
        self.argv = [str(a) for a in launch["argv"]]
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []
        me = proc_identity(os.getpid())
        self.record = InstanceRecord(
            launch_id=str(launch["launch_id"]),
            service=str(launch["service"]),
            argv=self.argv,
            cwd=str(launch["cwd"]),
            supervisor_pid=os.getpid(),
            supervisor_start_ticks=me[1] if me else None,
            state="starting",
            labels={str(k): str(v) for k, v in dict(launch.get("labels", {})).items()},
            ports=[int(p) for p in launch.get("ports", [])],
            stop_timeout_s=float(launch.get("stop_timeout_s", 10.0)),
        )

    def _save(self, **changes: Any) -> None:
        self.record = dataclasses.replace(self.record, **changes)
        write_record(self.dir / RECORD_NAME, self.record)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._proc is None:
            self._pending.append(signum)
        else:
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        assert self._proc is not None
        if self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)

    def run(self) -> int:
        self._save()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        with (self.dir / LOG_NAME).open("ab") as out:  # before the record says running
            return self._run(out)

    def _run(self, out: BinaryIO) -> int:
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.record.cwd,
                env={str(k): str(v) for k, v in dict(self.launch.get("env", {})).items()},
                start_new_session=True,
            )
        except OSError as e:
            what = e.strerror or str(e)
            if e.filename is not None and str(e.filename) not in (self.argv[0], ""):
                what = f"{what}: {e.filename}"
            self._save(
                state="failed",
                error=f"cannot execute {self.argv[0]!r}: {what}",
                finished_at=time.time(),
            )
            return 127
        proc = self._proc
        ident = proc_identity(proc.pid)
        self._save(
            state="running",
            pid=proc.pid,
            start_ticks=ident[1] if ident else None,
            started_at=time.time(),
        )
        for signum in self._pending:
            self._forward(signum)
        self._pending.clear()
        try:
            self._pump(proc, out)
        except Exception:
            log.exception("copying the output of %s failed; closing its pipes", self.argv)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        proc.wait()
        out.close()  # the log is complete before the record says exited
        self._save(state="exited", exit_code=exit_status(proc.returncode), finished_at=time.time())
        return 0

    def _pump(self, proc: subprocess.Popen[bytes], out: BinaryIO) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        splitters: dict[int, tuple[Stream, LineSplitter]] = {}
        for pipe, stream in zip((proc.stdout, proc.stderr), _STREAMS, strict=True):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
            splitters[fd] = (stream, LineSplitter())
        exited_at: float | None = None
        failing: list[OSError] = []

        def write(stream: Stream, lines: list[str]) -> None:
            now = time.time()
            try:
                for line in lines:
                    out.write(format_log_line(now, stream, line).encode("utf-8"))
                    out.flush()
            except OSError as e:  # disk full...: keep draining the pipes, never block the child
                if not failing:
                    log.error("cannot write %s (lines are dropped until it works): %s", LOG_NAME, e)
                failing[:] = [e]
            else:
                failing.clear()

        while sel.get_map():
            timeout = 0.2
            if exited_at is not None:
                timeout = min(timeout, exited_at + DRAIN_AFTER_EXIT_S - time.monotonic())
                if timeout <= 0:
                    break
            for key, _ in sel.select(timeout):
                stream, splitter = splitters[key.fd]
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    write(stream, splitter.feed(data))
                else:
                    write(stream, splitter.flush())
                    sel.unregister(key.fd)
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
        for stream, splitter in splitters.values():
            write(stream, splitter.flush())
        sel.close()
        proc.stdout.close()
        proc.stderr.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rayinfra-supervisor", description="Run one process service, detached."
    )
    parser.add_argument("--dir", required=True, help="instance directory holding launch.json")
    parser.add_argument("--foreground", action="store_true", help="do not detach (debugging)")
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    launch = json.loads((directory / LAUNCH_NAME).read_text(encoding="utf-8"))
    if not args.foreground:
        with contextlib.suppress(OSError):  # a session leader already (start_new_session)
            os.setsid()
        if os.fork() > 0:
            os._exit(0)  # the launcher's child exits; the supervisor is re-parented
        os.chdir("/")
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s supervisor %(message)s"
    )
    return Supervisor(directory, launch).run()


if __name__ == "__main__":
    sys.exit(main())

"""The ``process`` driver: services as supervised local processes that outlive their starter.

Layout: one directory per service and cluster, ``<root>/<cluster>/<service>/``::

    launch.json     what to run (argv, cwd, env, labels); mode 0600, env may hold secrets
    instance.json   the supervisor's record (pid, start time, state, exit code); see
                    :class:`rayinfra.services.supervisor.InstanceRecord`
    service.log     "<RFC 3339 UTC timestamp> <stdout|stderr> <line>" per line
    service.log.1   the log of the previous incarnation (kept by restart and :meth:`remove`)
    supervisor.log  the supervisor's own errors
    work/           the working directory when the spec sets no ``cwd``

``<cluster>`` is the ``rayinfra.cluster`` label (``default`` without one; a value that is not
a plain name is replaced by a hash). Each start goes through :mod:`rayinfra.services.supervisor`,
double-forked into a session of its own, so killing the caller (a Ray actor) or the caller's
whole process group leaves the service running; a restarted driver adopts it via
:meth:`ProcessDriver.list_owned` (which scans the ``instance.json`` files).

Instance ids are ``"<pid>-<start ticks>"``: the child's pid and its start time from
``/proc/<pid>/stat`` field 22, so an id whose pid was reused by another process is ``missing``,
never someone else's process.

Environment: a service sees the spec's ``env`` on top of an allow-list of the starter's
environment (``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``LANG``, ``LANGUAGE``,
``TZ``, ``TMPDIR``, ``LC_*``; see :func:`rayinfra.services.supervisor.child_env`), captured when
:meth:`ProcessDriver.start` runs. Nothing else leaks in (Ray's variables, credentials).

States: ``created`` while the supervisor is starting the child; ``running``; ``exited`` once
the child exited (``exit_code`` follows Docker: 128 + N when killed by signal N; ``None`` for a
moment while the supervisor records it); ``missing`` when no record matches the id, or the
record says running but neither the child nor its supervisor is left (machine rebooted, both
killed) - nobody recorded how it ended.

Working directory: the spec's ``cwd`` (a relative one is taken from the driver's working
directory when :meth:`ProcessDriver.start` runs), else ``work/`` in the instance directory.

Stop: SIGTERM to the child's process group, SIGKILL after the timeout; once the main process is
gone, what is left of its group is killed too (like a container's processes when its init
exits). A descendant that moved to a session of its own is not tracked.

Limits: if the supervisor itself is SIGKILLed the service keeps running and is still adopted and
stopped, but its output pipe has no reader any more (its next write gets EPIPE/SIGPIPE) and its
exit code is lost. The supervisor is re-parented to the nearest subreaper: with Ray's deprecated
``RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper=1`` that is the raylet, which
kills unknown children, so that option must stay off (the default); Ray's per-worker process
group cleanup is harmless (the supervisor has its own session).

Linux only (``/proc``). Every call is synchronous; concurrent calls for one service are
serialized by an ``flock`` on its directory, across threads and processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

import psutil

from rayinfra.services import supervisor as sv
from rayinfra.services.drivers.base import (
    DriverError,
    Instance,
    InstanceState,
    LogLine,
    PullProgress,
    Usage,
)
from rayinfra.services.drivers.procnet import with_namespace_traffic
from rayinfra.services.spec import LABEL_CLUSTER, LABEL_SERVICE, LABEL_SPEC, ServiceSpec

T = TypeVar("T")
DEFAULT_CLUSTER = "default"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID_RE = re.compile(r"^(\d+)-(\d+)$")
SUPERVISOR_FILE = Path(sv.__file__).resolve()
#: how long to wait for the supervisor to report after a stop (it reaps and drains pipes)
_RECORD_SETTLE_S = sv.DRAIN_AFTER_EXIT_S + 2.0
#: SIGKILL of a process group: how long until its leader is gone for sure
_KILL_WAIT_S = 5.0
#: how often :meth:`ProcessDriver.wait_exit` looks whether a child ended (a pid check and a
#: record read: cheap)
EXIT_POLL_S = 0.02
#: exec/host commands killed on timeout: how long to read what is left of their output
_DRAIN_AFTER_KILL_S = 1.0


def format_instance_id(pid: int, start_ticks: int) -> str:
    return f"{pid}-{start_ticks}"


def parse_instance_id(instance_id: str) -> tuple[int, int] | None:
    """``(pid, start_ticks)``, or ``None`` if ``instance_id`` is not a process driver id."""
    m = _ID_RE.match(instance_id)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cluster_dirname(cluster: str) -> str:
    """A directory name for a cluster label value (hashed unless it is a plain name)."""
    if _SAFE_NAME.match(cluster) and cluster not in (".", ".."):
        return cluster
    return "c-" + hashlib.sha256(cluster.encode()).hexdigest()[:16]


def _wait_until(cond: Callable[[], T], timeout_s: float, interval_s: float = 0.02) -> T:
    """Poll ``cond`` until it returns something true or ``timeout_s`` passed: its last value."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while not (value := cond()) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return value


def popen_session(
    argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (no shell) in a session (and process group) of its own, stdin closed,
    stderr merged into stdout; :class:`OSError` (not found, not executable...) propagates."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


def communicate_or_kill(
    proc: subprocess.Popen[bytes], timeout_s: float
) -> tuple[int | None, bytes]:
    """``(return code, output)`` of a :func:`popen_session` process. After ``timeout_s`` its
    whole process group is SIGKILLed and the code is ``None``, with the output read so far (none
    when a descendant that left the group still holds the pipe a second later)."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=_DRAIN_AFTER_KILL_S)
        except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipe
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            out = b""
        return None, out
    return proc.returncode, out


class ProcessDriver:
    """:class:`~rayinfra.services.drivers.base.Driver` for ``driver = "process"`` services."""

    kind = "process"

    def __init__(self, root: Path, *, start_timeout_s: float = 15.0) -> None:
        self.root = Path(root).resolve()
        self.start_timeout_s = start_timeout_s

    # ----------------------------------------------------------------- lookup and state

    def _service_dir(self, cluster: str, service: str) -> Path:
        return self.root / cluster_dirname(cluster) / service

    def _records(self) -> Iterator[tuple[Path, sv.InstanceRecord]]:
        for path in sorted(self.root.glob(f"*/*/{sv.RECORD_NAME}")):
            rec = sv.read_record(path)
            if rec is not None:
                yield path.parent, rec

    def _find(self, instance_id: str) -> tuple[Path, sv.InstanceRecord] | None:
        key = parse_instance_id(instance_id)
        if key is None:
            return None
        for d, rec in self._records():
            if (rec.pid, rec.start_ticks) == key:
                return d, rec
        return None

    def _get(self, instance_id: str) -> tuple[Path, sv.InstanceRecord]:
        """:meth:`_find`, or :class:`DriverError` (``not_found``)."""
        found = self._find(instance_id)
        if found is None:
            raise DriverError(f"no instance {instance_id}", reason="not_found")
        return found

    @staticmethod
    def _supervisor_alive(rec: sv.InstanceRecord) -> bool:
        return sv.is_alive(rec.supervisor_pid, rec.supervisor_start_ticks)

    def _state(self, rec: sv.InstanceRecord) -> InstanceState:
        if rec.state == "exited":
            return "exited"
        if rec.state == "running":
            if sv.is_alive(rec.pid, rec.start_ticks):
                return "running"
            return "exited" if self._supervisor_alive(rec) else "missing"
        if rec.state == "starting" and self._supervisor_alive(rec):
            return "created"
        return "missing"

    def _instance(self, rec: sv.InstanceRecord, state: InstanceState | None = None) -> Instance:
        state = state or self._state(rec)
        return Instance(
            id=format_instance_id(rec.pid or 0, rec.start_ticks or 0),
            service=rec.service,
            driver=self.kind,
            state=state,
            labels=dict(rec.labels),
            started_at=rec.started_at,
            exit_code=rec.exit_code if state == "exited" else None,
            ports=tuple(rec.ports),
            pid=rec.pid,
        )

    @contextlib.contextmanager
    def _locked(self, d: Path) -> Iterator[None]:
        d.mkdir(parents=True, exist_ok=True)
        with (d / ".lock").open("ab") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # ----------------------------------------------------------------- the protocol

    def check(self) -> None:
        """Nothing to connect to: local processes are always available. Never raises; a
        broken root or Python surfaces from :meth:`start` with the path in the message."""
        return None

    def prepare(self, spec: ServiceSpec, labels: Mapping[str, str]) -> None:
        """Nothing to do ahead: a process starts in one step."""

    def discard_prepared(self, spec: ServiceSpec, labels: Mapping[str, str]) -> None:
        """Nothing was prepared."""

    def start(self, spec: ServiceSpec, labels: Mapping[str, str]) -> Instance:
        if spec.driver != "process" or not spec.argv:
            raise DriverError(
                f"{spec.name}: the process driver runs driver='process' specs with argv",
                reason="invalid_spec",
            )
        all_labels = {**spec.labels, **labels}
        all_labels.setdefault(LABEL_SERVICE, spec.name)
        all_labels.setdefault(LABEL_SPEC, spec.fingerprint())
        d = self._service_dir(all_labels.get(LABEL_CLUSTER, DEFAULT_CLUSTER), spec.name)
        with self._locked(d):
            rec = sv.read_record(d / sv.RECORD_NAME)
            if rec is not None and self._state(rec) == "created":  # let it finish starting
                _wait_until(lambda: not self._starting(d), self.start_timeout_s)
                rec = sv.read_record(d / sv.RECORD_NAME)
            if rec is not None:
                state = self._state(rec)
                if state == "running" and rec.labels.get(LABEL_SPEC) == all_labels[LABEL_SPEC]:
                    return self._instance(rec, state)
                self._stop_record(d, rec, rec.stop_timeout_s)
                self._retire_supervisor(rec)
            return self._launch(d, spec, all_labels)

    def _starting(self, d: Path) -> bool:
        rec = sv.read_record(d / sv.RECORD_NAME)
        return rec is not None and self._state(rec) == "created"

    def _launch(self, d: Path, spec: ServiceSpec, labels: dict[str, str]) -> Instance:
        assert spec.argv
        with contextlib.suppress(FileNotFoundError):
            (d / sv.LOG_NAME).replace(d / f"{sv.LOG_NAME}.1")
        (d / sv.RECORD_NAME).unlink(missing_ok=True)
        if spec.cwd:
            cwd = Path(spec.cwd).expanduser()
            cwd = cwd if cwd.is_absolute() else Path.cwd() / cwd
        else:
            cwd = d / "work"
            cwd.mkdir(exist_ok=True)
        launch_id = uuid.uuid4().hex
        sv.write_json_atomic(
            d / sv.LAUNCH_NAME,
            {
                "launch_id": launch_id,
                "service": spec.name,
                "labels": labels,
                "argv": list(spec.argv),
                "cwd": str(cwd),
                "env": sv.child_env(os.environ, spec.env),
                "ports": spec.host_ports(),
                "stop_timeout_s": spec.stop_timeout_s,
            },
        )
        sup_env = sv.child_env(os.environ, {})
        with (d / sv.SUPERVISOR_LOG_NAME).open("ab") as sup_log:
            try:
                launcher = subprocess.Popen(
                    [sys.executable, "-I", str(SUPERVISOR_FILE), "--dir", str(d)],
                    stdin=subprocess.DEVNULL,
                    stdout=sup_log,
                    stderr=sup_log,
                    cwd="/",
                    env=sup_env,
                    start_new_session=True,
                )
            except OSError as e:
                raise DriverError(
                    f"{spec.name}: cannot run the supervisor with {sys.executable}: {e}",
                    reason="supervisor_failed",
                ) from e
        try:
            rc = launcher.wait(timeout=self.start_timeout_s)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            rc = -9
        if rc != 0:
            raise DriverError(
                f"{spec.name}: the supervisor failed to start (exit {rc}); "
                f"see {d / sv.SUPERVISOR_LOG_NAME}: {self._supervisor_log_tail(d)}",
                reason="supervisor_failed",
            )

        def launched() -> sv.InstanceRecord | None:
            """This launch's record once the supervisor ran argv (or failed to)."""
            now = sv.read_record(d / sv.RECORD_NAME)
            ours = now is not None and now.launch_id == launch_id and now.state != "starting"
            return now if ours else None

        rec = _wait_until(launched, self.start_timeout_s, 0.01)
        if rec is None:
            now = sv.read_record(d / sv.RECORD_NAME)
            if now is not None and now.launch_id == launch_id:
                self._retire_supervisor(now, grace_s=0)  # it must not start argv later
            raise DriverError(
                f"{spec.name}: the supervisor did not start {spec.argv[0]!r} within "
                f"{self.start_timeout_s:g} s; see {d / sv.SUPERVISOR_LOG_NAME}: "
                f"{self._supervisor_log_tail(d)}",
                reason="start_timeout",
            )
        if rec.state == "failed":
            raise DriverError(
                f"{spec.name}: {rec.error or f'cannot execute {spec.argv[0]!r}'} "
                "(argv[0] must be an executable path or a name on PATH)",
                reason="exec_failed",
            )
        return self._instance(rec)

    @staticmethod
    def _supervisor_log_tail(d: Path) -> str:
        try:
            text = (d / sv.SUPERVISOR_LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no supervisor log)"
        return " | ".join(text.strip().splitlines()[-3:]) or "(empty supervisor log)"

    def stop(self, instance_id: str, timeout_s: float) -> None:
        found = self._find(instance_id)
        if found is None:
            return
        d, rec = found
        with self._locked(d):
            self._stop_record(d, rec, timeout_s)

    def _stop_record(self, d: Path, rec: sv.InstanceRecord, timeout_s: float) -> None:
        """SIGTERM the child's group, SIGKILL it after ``timeout_s``, then wait (bounded) for
        the supervisor to record the exit."""
        pid, ticks = rec.pid, rec.start_ticks
        if pid is None or not sv.is_alive(pid, ticks):
            return

        def gone() -> bool:
            return not sv.is_alive(pid, ticks)

        self._signal_group(pid, ticks, signal.SIGTERM)
        if not _wait_until(gone, timeout_s, 0.02):
            self._signal_group(pid, ticks, signal.SIGKILL)
            _wait_until(gone, _KILL_WAIT_S)
        # the leader is gone: its group (pgid = its pid, not reusable while the group lives)
        # may still hold descendants that ignored SIGTERM; like a container, they go with it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

        def still_running() -> sv.InstanceRecord | None:
            """This launch's record while it still says running."""
            now = sv.read_record(d / sv.RECORD_NAME)
            ours = now is not None and now.launch_id == rec.launch_id and now.state == "running"
            return now if ours else None

        _wait_until(
            lambda: still_running() is None or not self._supervisor_alive(rec), _RECORD_SETTLE_S
        )
        now = still_running()
        if now is not None and not self._supervisor_alive(rec):
            # its supervisor was gone: record the stop ourselves (the exit code is unknown)
            sv.write_record(
                d / sv.RECORD_NAME,
                dataclasses.replace(now, state="exited", finished_at=time.time()),
            )

    @staticmethod
    def _signal_group(pid: int, ticks: int | None, sig: signal.Signals) -> None:
        if not sv.is_alive(pid, ticks):  # never signal a group whose leader is not ours
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as e:
            raise DriverError(f"cannot signal process group {pid}: {e}", reason="denied") from e

    def _retire_supervisor(self, rec: sv.InstanceRecord, grace_s: float = _RECORD_SETTLE_S) -> None:
        """The child is gone; let its supervisor finish writing, then make sure it is gone."""
        if _wait_until(lambda: not self._supervisor_alive(rec), grace_s):
            return
        if self._supervisor_alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.supervisor_pid, signal.SIGKILL)
            _wait_until(lambda: not self._supervisor_alive(rec), _KILL_WAIT_S)

    def remove(self, instance_id: str) -> None:
        """Stop (the record's ``stop_timeout_s``) and forget the instance: ``instance.json``,
        ``launch.json``, ``supervisor.log`` and ``work/`` go; the log is kept as
        ``service.log.1`` for a post-mortem (until the next incarnation is removed)."""
        found = self._find(instance_id)
        if found is None:
            return
        d, rec = found
        with self._locked(d):
            now = sv.read_record(d / sv.RECORD_NAME)
            if now is None or now.launch_id != rec.launch_id:
                return  # removed or replaced meanwhile
            self._stop_record(d, rec, rec.stop_timeout_s)
            self._retire_supervisor(rec)
            with contextlib.suppress(FileNotFoundError):
                (d / sv.LOG_NAME).replace(d / f"{sv.LOG_NAME}.1")
            for name in (sv.RECORD_NAME, sv.LAUNCH_NAME, sv.SUPERVISOR_LOG_NAME):
                (d / name).unlink(missing_ok=True)
            shutil.rmtree(d / "work", ignore_errors=True)

    def inspect(self, instance_id: str) -> Instance:
        found = self._find(instance_id)
        if found is None:
            return Instance(id=instance_id, service="", driver=self.kind, state="missing")
        return self._instance(found[1])

    def wait_exit(self, instance_id: str, timeout_s: float) -> Instance:
        """:meth:`inspect` every EXIT_POLL_S (a pid check and a record read) until the child
        ended and its supervisor recorded the exit code, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            inst = self.inspect(instance_id)
            if inst.ended or time.monotonic() >= deadline:
                return inst
            time.sleep(EXIT_POLL_S)

    def list_owned(self, labels: Mapping[str, str]) -> list[Instance]:
        out = []
        for _, rec in self._records():
            if rec.pid is None:
                continue  # never started (argv could not be executed) or still starting
            if all(rec.labels.get(k) == v for k, v in labels.items()):
                out.append(self._instance(rec))
        return out

    def usage(self, instance_id: str) -> Usage:
        """CPU time (user + system) and RSS of the child and all its descendants; network:
        the counters of the child's network namespace (the whole host's, scope ``host``,
        unless it runs in a namespace of its own: :mod:`~rayinfra.services.drivers.procnet`)."""
        found = self._find(instance_id)
        rec = found[1] if found else None
        if rec is None or rec.pid is None or not sv.is_alive(rec.pid, rec.start_ticks):
            raise DriverError(f"instance {instance_id} is not running", reason="not_running")
        try:
            top = psutil.Process(rec.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess as e:
            raise DriverError(f"instance {instance_id} is not running", reason="not_running") from e
        cpu = 0.0
        rss = 0
        at = time.monotonic()
        for p in procs:
            try:
                t = p.cpu_times()
                mem = p.memory_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += mem.rss
        return with_namespace_traffic(Usage(at=at, cpu_time_s=cpu, memory_bytes=rss), rec.pid)

    def logs(
        self, instance_id: str, *, follow: bool, tail: int | None, since: float | None
    ) -> Iterator[LogLine]:
        """Lines of ``service.log``: those at or after ``since``, then the last ``tail`` of
        them; ``follow`` keeps reading until the instance has exited and the log is drained."""
        d, rec = self._get(instance_id)
        return self._read_logs(d, rec, follow=follow, tail=tail, since=since)

    def _read_logs(
        self,
        d: Path,
        rec: sv.InstanceRecord,
        *,
        follow: bool,
        tail: int | None,
        since: float | None,
    ) -> Iterator[LogLine]:
        try:
            f = (d / sv.LOG_NAME).open("rb")  # exists before the record says running
        except FileNotFoundError:
            return
        pending = b""  # a line not yet ended by "\n"

        def complete_lines(chunk: bytes) -> Iterator[LogLine]:
            nonlocal pending
            *lines, pending = (pending + chunk).split(b"\n")
            return _parse_lines(lines, since)

        with f:
            if tail is not None and since is None:
                f.seek(tail_offset(f, tail))
                tail = None
            first: deque[LogLine] = deque(maxlen=tail)
            while chunk := f.read(65536):
                first.extend(complete_lines(chunk))
            if not follow:
                # a partial last line is a line being written, unless the writer is done
                if pending and self._log_finished(d, rec):
                    first.extend(_parse_lines([pending], since))
                yield from first
                return
            yield from first
            finished = False
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield from complete_lines(chunk)
                    continue
                if finished:
                    break
                finished = self._log_finished(d, rec)  # then drain once more
                if not finished:
                    time.sleep(0.1)
            if pending:
                yield from _parse_lines([pending], since)

    def _log_finished(self, d: Path, rec: sv.InstanceRecord) -> bool:
        """Nothing more will be appended to this incarnation's log."""
        now = sv.read_record(d / sv.RECORD_NAME)
        if now is None or now.launch_id != rec.launch_id:
            return True
        if now.state in ("exited", "failed"):
            return True  # written after the log was drained and closed
        return not self._supervisor_alive(now)

    def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        """Run ``argv`` on the host in the instance's working directory and environment;
        (exit code, stdout and stderr interleaved). A timeout kills its process group and
        raises :class:`DriverError` (``reason="timeout"``)."""
        if not argv:
            raise DriverError("exec needs a non-empty argv", reason="invalid_argument")
        d, rec = self._get(instance_id)
        env = sv.child_env(os.environ, {})
        with contextlib.suppress(OSError, ValueError):
            launch = json.loads((d / sv.LAUNCH_NAME).read_text(encoding="utf-8"))
            if launch.get("launch_id") == rec.launch_id:
                env = {str(k): str(v) for k, v in dict(launch.get("env", {})).items()}
        cwd = rec.cwd if Path(rec.cwd).is_dir() else None
        try:
            proc = popen_session(argv, cwd=cwd, env=env)
        except OSError as e:
            raise DriverError(
                f"cannot execute {argv[0]!r}: {e.strerror or e}", reason="exec_failed"
            ) from e
        code, out = communicate_or_kill(proc, timeout_s)
        if code is None:
            raise DriverError(
                f"{argv[0]!r} did not finish within {timeout_s:g} s (killed)", reason="timeout"
            )
        return sv.exit_status(code), out.decode("utf-8", errors="replace")

    def pull(self, image: str) -> Iterator[PullProgress]:
        """Process services have no images: nothing to pull."""
        yield from ()


def _parse_lines(lines: list[bytes], since: float | None) -> Iterator[LogLine]:
    for raw in lines:
        entry = sv.parse_log_line(raw.decode("utf-8", errors="replace"))
        if entry is None or (since is not None and entry.timestamp < since):
            continue
        yield LogLine(timestamp=entry.timestamp, stream=entry.stream, message=entry.message)


def tail_offset(f: BinaryIO, n: int) -> int:
    """Offset of the first of the last ``n`` complete lines of ``f`` (read backwards)."""
    end = f.seek(0, os.SEEK_END)
    if n <= 0:
        return end
    f.seek(max(0, end - 1))
    # a final newline ends the last line; a last line without one still counts
    pos = end - 1 if end and f.read(1) == b"\n" else end
    count = 0
    while pos > 0:
        start = max(0, pos - 65536)
        f.seek(start)
        data = f.read(pos - start)
        i = len(data)
        while (i := data.rfind(b"\n", 0, i)) >= 0:
            count += 1
            if count == n:
                return start + i + 1
        pos = start
    return 0

"""The local Ray head process: ``ray start --head --block`` launched, watched and stopped by pid.

This is the one wrapper around the ``ray`` CLI process. It never runs a bare ``ray stop`` (that
kills every Ray process on the machine): the head runs in its own session, its pid is recorded in
``connection.json``, and stopping signals that pid, then sweeps whatever is left in its session.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rayinfra import hardware
from rayinfra._deprecation import renamed
from rayinfra.config import RayinfraConfig
from rayinfra.connection import ConnectionInfo, pid_alive

LOOPBACK = "127.0.0.1"
READY_MARKER = "This command will now block forever"


class HeadError(RuntimeError):
    """The head could not be started or stopped; the message says why and what to look at."""


class PortBusyError(HeadError):
    """A port the head needs is already taken."""

    def __init__(self, name: str, port: int, host: str = LOOPBACK) -> None:
        super().__init__(
            f"port {port} ({name}) is already in use on {host}; free it or set "
            f"[ray] {name} in the rayinfra config"
        )
        self.name = name
        self.port = port


def ray_executable() -> str:
    """The `ray` CLI of the interpreter running rayinfra (not whatever is first on PATH)."""
    candidate = Path(sys.executable).parent / "ray"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise HeadError("the `ray` command is not installed (pip install 'ray[default]')")
    return found


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True if something listens on host:port.

    Binds with SO_REUSEADDR, as Ray's servers do: a port left in TIME_WAIT by a head that just
    stopped is free for them, and must not read as busy (``stop && start`` would fail for a
    minute); an active listener still makes the bind fail.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def check_ports(config: RayinfraConfig, host: str = LOOPBACK) -> None:
    """Raise :class:`PortBusyError` naming the first configured head port that is taken."""
    for name, port in config.ray.named_ports().items():
        if port_in_use(port, host):
            raise PortBusyError(name, port, host)


def ensure_token(path: Path) -> Path:
    """Create a Ray auth token file (0600) if absent; return its path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def head_argv(config: RayinfraConfig, hw: hardware.HardwareInfo, ray_bin: str) -> list[str]:
    """The full argv of the head process (loopback, explicit ports, hardware labels)."""
    r = config.ray
    argv = [
        ray_bin,
        "start",
        "--head",
        "--block",
        f"--node-ip-address={LOOPBACK}",
        f"--port={r.gcs_port}",
        f"--node-manager-port={r.node_manager_port}",
        f"--object-manager-port={r.object_manager_port}",
        f"--ray-client-server-port={r.client_server_port}",
        f"--dashboard-agent-listen-port={r.dashboard_agent_listen_port}",
        f"--dashboard-agent-grpc-port={r.dashboard_agent_grpc_port}",
        f"--metrics-export-port={r.metrics_export_port}",
        f"--runtime-env-agent-port={r.runtime_env_agent_port}",
        f"--min-worker-port={r.min_worker_port}",
        f"--max-worker-port={r.max_worker_port}",
        f"--temp-dir={config.ray_temp_dir}",
        f"--include-dashboard={'true' if r.include_dashboard else 'false'}",
    ]
    if r.include_dashboard:
        argv += [f"--dashboard-host={r.dashboard_host}", f"--dashboard-port={r.dashboard_port}"]
    if r.object_store_memory:
        argv.append(f"--object-store-memory={r.object_store_memory}")
    if not r.usage_stats:
        argv.append("--disable-usage-stats")
    argv += hardware.ray_start_args(
        hw,
        role="head",
        num_cpus=r.num_cpus,
        num_gpus=r.num_gpus,
        extra_labels=r.labels,
        extra_resources=r.resources,
    )
    return argv


def head_env(config: RayinfraConfig, base: Mapping[str, str]) -> dict[str, str]:
    """Environment for a loopback head: every Ray process it starts inherits it."""
    env = {k: v for k, v in base.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "1" if config.ray.usage_stats else "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = str(config.ray.drain_timeout_s)
    env["RAY_AUTH_MODE"] = config.ray.auth_mode
    if config.ray.auth_mode == "token":
        env["RAY_AUTH_TOKEN_PATH"] = str(config.ray_token_path)
    else:
        env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class LaunchedHead:
    info: ConnectionInfo
    process: subprocess.Popen[bytes]


def launch_head(
    config: RayinfraConfig,
    hw: hardware.HardwareInfo,
    base_env: Mapping[str, str] | None = None,
) -> LaunchedHead:
    """Start ``ray start --head --block`` in its own session and wait until it serves.

    Raises :class:`PortBusyError` before launching if a configured port is taken, and
    :class:`HeadError` (with the head log's tail) if it exits or does not get ready in time.
    """
    check_ports(config)
    state_dir = config.state.dir
    state_dir.mkdir(parents=True, exist_ok=True)
    if config.ray.auth_mode == "token":
        ensure_token(config.ray_token_path)
    log_path = state_dir / "ray-head.log"
    argv = head_argv(config, hw, ray_executable())
    env = head_env(config, os.environ if base_env is None else base_env)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.ctime()} {json.dumps(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + config.ray.start_timeout_s
    r = config.ray
    while True:
        code = proc.poll()
        if code is not None:
            raise HeadError(
                f"ray head exited with code {code} during start-up; log {log_path}:\n"
                + _log_tail(log_path)
            )
        if _listening(r.gcs_port) and _listening(r.node_manager_port) and _ready_logged(log_path):
            break
        if time.monotonic() > deadline:
            stop_head(proc.pid, timeout_s=10, force=True)
            raise HeadError(
                f"ray head not ready after {r.start_timeout_s:.0f}s; log {log_path}:\n"
                + _log_tail(log_path)
            )
        time.sleep(0.1)
    dashboard = f"http://{r.dashboard_host}:{r.dashboard_port}" if r.include_dashboard else None
    info = ConnectionInfo(
        gcs_address=f"{LOOPBACK}:{r.gcs_port}",
        mode="local",
        loopback=True,
        auth_mode=r.auth_mode,
        token_path=str(config.ray_token_path) if r.auth_mode == "token" else None,
        state_dir=str(state_dir),
        head_pid=proc.pid,
        temp_dir=str(config.ray_temp_dir),
        dashboard_url=dashboard,
        ports={
            **r.named_ports(),
            "min_worker_port": r.min_worker_port,
            "max_worker_port": r.max_worker_port,
        },
        head_log=str(log_path),
    )
    return LaunchedHead(info=info, process=proc)


def _ready_logged(log_path: Path) -> bool:
    try:
        with log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            return READY_MARKER.encode() in f.read()
    except OSError:
        return False


def session_members(sid: int) -> list[int]:
    """Pids of live processes whose session id is ``sid`` (the head's process tree)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) == sid and pid_alive(pid):
                out.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return out


def stop_head(pid: int, timeout_s: float, force: bool) -> list[int]:
    """Stop the head launched with ``pid``; return the pids still alive afterwards.

    SIGTERM to the head (Ray drains and stops its children), wait up to ``timeout_s``; then
    SIGTERM whatever else is left in its session. With ``force``, SIGKILL the rest.
    Only processes of that session are ever signalled.
    """

    def _signal(p: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)

    def _wait(pids_fn: Callable[[], list[int]], until: float) -> list[int]:
        left = pids_fn()
        while left and time.monotonic() < until:
            time.sleep(0.1)
            _reap(pid)
            left = pids_fn()
        return left

    if pid_alive(pid):
        _signal(pid, signal.SIGTERM)
    _wait(lambda: [pid] if pid_alive(pid) else [], time.monotonic() + timeout_s)
    left = session_members(pid)
    for p in left:
        _signal(p, signal.SIGTERM)
    left = _wait(lambda: session_members(pid), time.monotonic() + min(5.0, timeout_s))
    if left and force:
        for p in left:
            _signal(p, signal.SIGKILL)
        left = _wait(lambda: session_members(pid), time.monotonic() + 5.0)
    return left


def describe_pids(pids: list[int]) -> str:
    """``pid (command line)`` for each pid, for messages about processes that would not exit."""
    parts = []
    for p in pids:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            cmd = "?"
        cmd = cmd.replace("\0", " ")
        parts.append(f"{p} ({cmd.strip()[:120]})")
    return ", ".join(parts)


def _reap(pid: int) -> None:
    """Collect the head's exit status if it is our child (avoids a zombie looking alive)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


__getattr__ = renamed(__name__, {"PortBusy": "PortBusyError"})

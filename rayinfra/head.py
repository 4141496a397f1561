"""The Ray node processes this machine runs: the local head (``rayinfra start``) and worker
nodes joining a cluster (``rayinfra join``), each ``ray start ... --block`` launched, watched and
stopped by pid.

This is the one wrapper around the ``ray`` CLI process. It never runs a bare ``ray stop`` (that
kills every Ray process on the machine): each node runs in its own session, its pid is recorded
(``connection.json`` for the head, ``worker-node.json`` for a joined node), and stopping signals
that pid, then sweeps whatever is left in its session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
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
from rayinfra.config import RayinfraConfig, private_tmp_root
from rayinfra.connection import ConnectionInfo, pid_alive
from rayinfra.private_files import ensure_private_dir

LOOPBACK = "127.0.0.1"
READY_MARKER = "This command will now block forever"
WORKER_NODE_FILE = "worker-node.json"
#: the single ports a worker node listens on (``ray start`` flag names); picked free per join
WORKER_PORT_FLAGS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


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
    return argv + node_args(config, hw, "head")


def node_args(
    config: RayinfraConfig,
    hw: hardware.HardwareInfo,
    role: str,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """What every node rayinfra starts passes ``ray start``: object store size, usage stats, and
    its CPUs, GPUs, hardware labels (plus ``[ray] labels`` and ``labels``) and resources."""
    r = config.ray
    argv = [f"--object-store-memory={r.object_store_memory}"] if r.object_store_memory else []
    if not r.usage_stats:
        argv.append("--disable-usage-stats")
    return argv + hardware.ray_start_args(
        hw,
        role=role,
        num_cpus=r.num_cpus,
        num_gpus=r.num_gpus,
        extra_labels={**r.labels, **(labels or {})},
        extra_resources=r.resources,
    )


def head_env(config: RayinfraConfig, base: Mapping[str, str]) -> dict[str, str]:
    """Environment for a loopback head: every Ray process it starts inherits it."""
    env = {k: v for k, v in base.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "1" if config.ray.usage_stats else "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = str(config.ray.drain_timeout_s)
    env["RAY_task_events_max_num_task_in_gcs"] = str(config.ray.gcs_task_events)
    env["RAY_AUTH_MODE"] = config.ray.auth_mode
    if config.ray.auth_mode == "token":
        env["RAY_AUTH_TOKEN_PATH"] = str(config.ray_token_path)
    else:
        env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


def _listening(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


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
    if config.ray.temp_dir is None:  # Ray makes its temp dir 0777: keep it in a private one
        try:
            ensure_private_dir(private_tmp_root())
        except OSError as e:
            raise HeadError(f"Ray temp dir: {e}") from e
    if config.ray.auth_mode == "token":
        ensure_token(config.ray_token_path)
    r = config.ray
    proc, log_path = _launch(
        head_argv(config, hw, ray_executable()),
        head_env(config, os.environ if base_env is None else base_env),
        state_dir,
        "ray-head.log",
        ready=lambda: _listening(r.gcs_port) and _listening(r.node_manager_port),
        what="ray head",
        timeout_s=r.start_timeout_s,
    )
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


def _launch(
    argv: list[str],
    env: Mapping[str, str],
    state_dir: Path,
    log_name: str,
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a ``ray start ... --block`` in its own session, logging to ``state_dir/log_name``;
    wait until it says it blocks and ``ready()``; :class:`HeadError` with the log's tail if it
    exits or is not ready in ``timeout_s`` (then it is stopped)."""
    ensure_private_dir(state_dir)
    log_path = state_dir / log_name
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.ctime()} {json.dumps(argv)}\n".encode())
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise HeadError(
                f"{what} exited with code {code} during start-up; log {log_path}:\n"
                + _log_tail(log_path)
            )
        if _ready_logged(log_path, start) and ready():
            return proc, log_path
        if time.monotonic() > deadline:
            stop_head(proc.pid, timeout_s=10, force=True)
            raise HeadError(
                f"{what} not ready after {timeout_s:.0f}s; log {log_path}:\n" + _log_tail(log_path)
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# worker nodes: `rayinfra join HEAD:PORT`


def interface_ip(interface: str) -> str:
    """The IPv4 address of a network interface (``HeadError`` naming it if it has none)."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), siocgifaddr, interface.encode()[:15].ljust(256, b"\0"))
        except OSError as e:
            raise HeadError(f"network interface {interface!r} has no IPv4 address: {e}") from None
    return socket.inet_ntoa(packed[20:24])


def node_ip_towards(head_host: str) -> str:
    """The local address this machine uses to reach ``head_host`` (its route's source)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((head_host, 9))  # UDP: no packet is sent, only the route is looked up
        except OSError as e:
            raise HeadError(f"no route to the head {head_host}: {e}") from None
        return str(s.getsockname()[0])


def free_port(host: str) -> int:
    """A port nothing listens on at ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class WorkerNode:
    """A Ray worker node ``rayinfra join`` started on this machine (``worker-node.json``)."""

    head: str  # host:port of the cluster's GCS
    node_ip: str
    pid: int
    temp_dir: str
    log: str
    labels: dict[str, str]


def worker_argv(
    config: RayinfraConfig,
    hw: hardware.HardwareInfo,
    ray_bin: str,
    head: str,
    node_ip: str,
    ports: Mapping[str, int],
    temp_dir: Path,
    labels: Mapping[str, str],
) -> list[str]:
    """``ray start --address=HEAD --block`` with an explicit node IP and ports, a short temp
    dir, and the same hardware labels and resources as a head (role ``worker``)."""
    argv = [
        ray_bin,
        "start",
        f"--address={head}",
        "--block",
        f"--node-ip-address={node_ip}",
        *(f"--{flag}={ports[flag]}" for flag in WORKER_PORT_FLAGS),
        # workers bind ports the OS picks: nodes sharing a machine never collide
        "--min-worker-port=0",
        "--max-worker-port=0",
        f"--temp-dir={temp_dir}",
    ]
    return argv + node_args(config, hw, "worker", labels)


def worker_env(
    config: RayinfraConfig, base: Mapping[str, str], token_path: Path | None
) -> dict[str, str]:
    """Environment of a worker node: cluster mode (never the loopback setting, which makes Ray
    refuse to join), the cluster's auth token when it has one."""
    env = {
        k: v
        for k, v in base.items()
        if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env["RAY_USAGE_STATS_ENABLED"] = "1" if config.ray.usage_stats else "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = str(config.ray.drain_timeout_s)
    if token_path is not None:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    else:
        env["RAY_AUTH_MODE"] = "disabled"
        env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


@dataclass(frozen=True)
class WorkerPlan:
    """How ``rayinfra join`` starts a worker node: the argv, its environment and where."""

    head: str
    node_ip: str
    ports: dict[str, int]
    temp_dir: Path
    labels: dict[str, str]  # given on top of the hardware labels
    argv: list[str]
    env: dict[str, str]


def worker_plan(
    config: RayinfraConfig,
    hw: hardware.HardwareInfo,
    head: str,
    *,
    node_ip: str | None = None,
    interface: str | None = None,
    labels: Mapping[str, str] | None = None,
    token_path: Path | None = None,
    temp_dir: Path | None = None,
    base_env: Mapping[str, str] | None = None,
) -> WorkerPlan:
    """A worker joining ``head``: the node IP given, else the interface's, else the one that
    routes to the head; every listening port picked free; a short temp dir of its own (or
    ``temp_dir``)."""
    host, _, port = head.rpartition(":")
    if not host or not port.isdigit():
        raise HeadError(f"{head!r} is not HOST:PORT of a Ray head (its GCS address)")
    if node_ip is None:
        node_ip = interface_ip(interface) if interface else node_ip_towards(host)
    if node_ip in ("127.0.0.1", "localhost", "::1"):
        raise HeadError(
            f"node IP {node_ip} would be replaced by Ray with this machine's address: Ray nodes "
            "of one cluster on one machine need another loopback address (127.0.0.2, ...) or a "
            "real interface (--node-ip-address / --interface)"
        )
    extra = dict(labels or {})
    for label_key, label_value in extra.items():
        hardware.validate_label(label_key, label_value)
    if temp_dir is None:
        digest = hashlib.sha256(f"{config.state.dir}|{head}|{node_ip}".encode()).hexdigest()[:8]
        temp_dir = private_tmp_root() / f"w{digest}"  # Ray makes it 0777: a private parent
    ports = {flag: free_port(node_ip) for flag in WORKER_PORT_FLAGS}
    argv = worker_argv(config, hw, ray_executable(), head, node_ip, ports, temp_dir, extra)
    env = worker_env(config, os.environ if base_env is None else base_env, token_path)
    return WorkerPlan(head, node_ip, ports, temp_dir, extra, argv, env)


def launch_worker(config: RayinfraConfig, plan: WorkerPlan) -> WorkerNode:
    """Start the worker node in its own session, wait until its raylet serves, record it."""
    state_dir = config.state.dir
    if (existing := read_worker(state_dir)) is not None and pid_alive(existing.pid):
        raise HeadError(
            f"this state dir already runs a worker node (pid {existing.pid}, joined to "
            f"{existing.head}); `rayinfra stop` it first or use another --state-dir"
        )
    manager = plan.ports["node-manager-port"]
    if plan.temp_dir.parent == private_tmp_root():
        ensure_private_dir(plan.temp_dir.parent)
    proc, log_path = _launch(
        plan.argv,
        plan.env,
        state_dir,
        "ray-worker.log",
        ready=lambda: _listening(manager, plan.node_ip),
        what=f"ray worker node joining {plan.head}",
        timeout_s=config.ray.start_timeout_s,
    )
    node = WorkerNode(
        plan.head, plan.node_ip, proc.pid, str(plan.temp_dir), str(log_path), plan.labels
    )
    path = state_dir / WORKER_NODE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(node), indent=2, sort_keys=True))
    tmp.replace(path)
    return node


def read_worker(state_dir: Path) -> WorkerNode | None:
    try:
        return WorkerNode(**json.loads((state_dir / WORKER_NODE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stop_worker(
    state_dir: Path, timeout_s: float, force: bool
) -> tuple[WorkerNode | None, list[int]]:
    """Stop the worker node recorded in ``state_dir`` (if any): ``(node, pids left)``; the
    record and the node's temp dir are removed once nothing is left."""
    node = read_worker(state_dir)
    if node is None:
        return None, []
    left = stop_head(node.pid, timeout_s=timeout_s, force=force)
    if not left:
        (state_dir / WORKER_NODE_FILE).unlink(missing_ok=True)
        shutil.rmtree(node.temp_dir, ignore_errors=True)
    return node, left


def _ready_logged(log_path: Path, start: int = 0) -> bool:
    """Whether the log, after offset ``start`` (this launch's part), says Ray now blocks."""
    try:
        with log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - 65536))
            return READY_MARKER.encode() in f.read()
    except OSError:
        return False


STRAGGLER_GRACE_S = 10.0
"""How long what is left of a head's session after the head has gone gets to exit on SIGTERM."""


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
    SIGTERM whatever else is left in its session and give it :data:`STRAGGLER_GRACE_S`. What
    outlives that is SIGKILLed when the head itself has exited (orphans of a stopped head: a
    dashboard module slow to shut down on a loaded host, and the ``multiprocessing`` resource
    tracker, which ignores SIGTERM by design, behind it; ``ray stop`` escalates the same way
    after its grace period) or, with ``force``, in any case. Only processes of that session
    are ever signalled.
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
    left = _wait(lambda: session_members(pid), time.monotonic() + min(STRAGGLER_GRACE_S, timeout_s))
    if left and (force or not pid_alive(pid)):
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

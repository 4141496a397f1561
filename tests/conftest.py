"""Shared test helpers: free loopback ports, per-test runtime configs, the session runtime."""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayinfra.config import HEAD_PORT_KEYS

# Every Ray process a test starts binds 127.0.0.1 only (TESTING.md); keep Ray quiet and fast.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "2")

RAY_PORT_KEYS = (*HEAD_PORT_KEYS, "dashboard_port")  # every [ray] port a head binds
#: a real NVIDIA GPU's device node: tests marked ``gpu`` run only where it exists
NVIDIA_DEVICE = Path("/dev/nvidia0")
#: the test runtimes' CPU classes run ``shell`` tasks (off by default: ``allow_shell``)
SHELL_CLASSES_TOML = (
    "[classes.cpu_short]\nallow_shell = true\n[classes.cpu_long]\nallow_shell = true\n"
)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now and not handed to another test in this session."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_port_range(width: int = 100) -> tuple[int, int]:
    """A block of ports below the ephemeral range, free now, for Ray's worker ports."""
    for _ in range(50):
        base = random.randrange(20000, 32000 - width)
        block = range(base, base + width)
        if _handed_out.intersection(block):
            continue
        try:
            for p in (base, base + width // 2, base + width - 1):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        _handed_out.update(block)
        return base, base + width - 1
    raise RuntimeError("no free worker port block found")


@dataclass
class RuntimeSpec:
    """A private runtime for a test: its own state dir, config file and ports."""

    root: Path
    state_dir: Path
    config_path: Path
    ports: dict[str, int]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYINFRA_")}
        env["RAYINFRA_CONFIG"] = str(self.config_path)
        return env


FIXTURES = Path(__file__).parent / "fixtures"
GATEWAY_ADDR_KEYS = (
    "orchestrator_grpc_addr",
    "orchestrator_http_addr",
    "env_manager_grpc_addr",
    "env_manager_http_addr",
)


def make_runtime_spec(
    prefix: str = "ri", extra_toml: str = "", ray_lines: tuple[str, ...] = ()
) -> RuntimeSpec:
    """A config of a runtime of its own. CPU-only, ``num_gpus = 0``, unless ``ray_lines`` sets
    ``num_gpus``: on a host with GPUs the runtime then behaves as on one without (a GPU class
    is unschedulable, naming the resource), so the suite means the same everywhere."""
    # short path: Ray's unix sockets live under the temp dir and have a ~107 byte limit
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    ports = {k: free_port() for k in RAY_PORT_KEYS}
    lo, hi = free_port_range()
    state_dir = root / "state"
    gpus_given = any(line.partition("=")[0].strip() == "num_gpus" for line in ray_lines)
    lines = ["[ray]", *(f"{k} = {v}" for k, v in ports.items())]
    lines += [
        f"min_worker_port = {lo}",
        f"max_worker_port = {hi}",
        f'temp_dir = "{root / "ray"}"',
        "num_cpus = 8",  # logical: executors of several classes hold CPUs on a 2-core machine
        "drain_timeout_s = 1",
        *([] if gpus_given else ["num_gpus = 0"]),  # detected GPUs are not advertised
        *ray_lines,
        "[state]",
        f'dir = "{state_dir}"',
        "[gateway]",  # every test runtime serves on ports of its own
        *(f'{k} = "127.0.0.1:{free_port()}"' for k in GATEWAY_ADDR_KEYS),
    ]
    config_path = root / "config.toml"
    config_path.write_text("\n".join(lines) + "\n" + extra_toml)
    return RuntimeSpec(root=root, state_dir=state_dir, config_path=config_path, ports=ports)


@pytest.fixture
def runtime_spec() -> Iterator[RuntimeSpec]:
    spec = make_runtime_spec(extra_toml=SHELL_CLASSES_TOML)
    yield spec
    shutil.rmtree(spec.root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before any fixture starts a runtime for it
def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.gpu`` tests need a real NVIDIA GPU: skipped, saying so, where it is absent."""
    if item.get_closest_marker("gpu") is not None and not NVIDIA_DEVICE.exists():
        pytest.skip(f"needs a real NVIDIA GPU: {NVIDIA_DEVICE} does not exist on this host")


_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each phase's time (setup, call, teardown) to its test file's total."""
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the suite's time went, by test file (module fixtures included): what to look at
    first when CI nears its 45-minute budget."""
    if not _FILE_SECONDS:
        return
    total = sum(_FILE_SECONDS.values())
    terminalreporter.section("time by test file")
    for path, s in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:25]:
        terminalreporter.write_line(f"{s:8.1f}s {s / total:6.1%}  {path}")
    terminalreporter.write_line(f"{total:8.1f}s in all, {len(_FILE_SECONDS)} files")

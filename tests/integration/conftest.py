"""The session-scoped runtime most integration tests share (one Ray head, control actors)."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rayinfra import runtime
from rayinfra.config import RayinfraConfig, load_config
from rayinfra.connection import ConnectionInfo
from tests.conftest import FIXTURES, RuntimeSpec, free_port, make_runtime_spec
from tests.support.images import BUSYBOX_IMAGE

#: host ports of the session runtime's test services (tests/integration/test_services_runtime.py)
SERVICE_PORTS = {"kv": free_port(), "victim": free_port()}
BURN = "import time\nwhile True:\n    sum(range(10000))\n"


def services_toml(ports: dict[str, int]) -> str:
    """Process services (redis-server, a CPU burner) and a container for the session runtime."""
    kv, victim = ports["kv"], ports["victim"]
    redis = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return f"""
[services]
profile = "local"
health_timeout_s = 30
stop_timeout_s = 3

[services.definitions.kv]
driver = "process"
argv = {json.dumps([*redis, "--port", str(kv)])}
ports = [{kv}]
required = true
health = {{ kind = "redis", port = {kv}, interval_s = 0.5 }}

[services.definitions.burner]
driver = "process"
argv = {json.dumps([sys.executable, "-c", BURN])}
depends_on = [{{ service = "kv", condition = "healthy" }}]

[services.definitions.victim]
driver = "process"
argv = {json.dumps([*redis, "--port", str(victim)])}
health = {{ kind = "redis", port = {victim}, interval_s = 0.3, timeout_s = 0.3, retries = 2 }}
restart = {{ backoff_initial_s = 0.2, backoff_max_s = 0.5, max_attempts = 3, window_s = 60 }}

[services.definitions.boxed]
image = "{BUSYBOX_IMAGE}"
command = ["sleep", "600"]
network_mode = "none"
"""


# Test-only classes: `fixture` gets user code through its runtime_env (a shipped module and a
# handler distribution on PYTHONPATH); `knee` runs the capacity-knee handler.
SESSION_TOML = f"""
[scheduler]
unschedulable_timeout_s = 2.0
queue_poll_interval_s = 0.2
executor_start_timeout_s = 15.0

# the CPU classes run shell tasks, as with tests.conftest.SHELL_CLASSES_TOML (off by default)
[classes.cpu_short]
max_attempts = 1
allow_shell = true

[classes.cpu_long]
allow_shell = true

[classes.fixture]
num_cpus = 0.5
max_limit = 16
runtime_env = {{py_modules = ["{FIXTURES / "shipped" / "rayinfra_shipped"}"], env_vars = {{PYTHONPATH = "{FIXTURES / "handlers"}"}}}}

[classes.widget]
num_cpus = 0
resources = {{widget = 1}}
max_limit = 8

[classes.brokenenv]
num_cpus = 0
runtime_env = {{py_modules = ["/nonexistent/rayinfra_no_such_module"]}}

[classes.badinit]
num_cpus = 0
runtime_env = {{env_vars = {{PYTHONHOME = "/nonexistent-python-home"}}}}

[slurm]
# gpu_slurm jobs on the single-node Slurm (2 CPUs, no GPU), polled fast
task_values = {{ GPUS = 0, CPUS_PER_TASK = 1, MEMORY_GB = 1, TIME_LIMIT = "00:10:00" }}
poll_interval_s = 0.2
poll_max_interval_s = 1.0
[classes.knee]
num_cpus = 0.5
min_limit = 1
initial_limit = 2
max_limit = 40
runtime_env = {{env_vars = {{PYTHONPATH = "{FIXTURES / "handlers"}"}}}}
""" + services_toml(SERVICE_PORTS)


@dataclass
class Runtime:
    spec: RuntimeSpec
    config: RayinfraConfig
    info: ConnectionInfo


@pytest.fixture(scope="session")
def rt() -> Iterator[Runtime]:
    """A real local runtime (loopback Ray head with token auth + control actors) for the session.

    This test process is connected to it as a Ray driver.
    """
    spec = make_runtime_spec("ris", SESSION_TOML, ray_lines=("resources = {widget = 2}",))
    config = load_config(env=spec.env()).config
    # Start the head the way a background job in a script would (`cmd &` ignores SIGINT, and
    # every Ray process inherits that), so tests see what CI and daemonised users get.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        report = runtime.start(config)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert report.launched_head
    try:
        yield Runtime(spec=spec, config=config, info=report.info)
    finally:
        runtime.stop_services(config.state.dir, timeout_s=5)
        runtime.stop(config.state.dir, timeout_s=30, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)

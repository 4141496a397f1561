"""The session-scoped runtime most integration tests share (one Ray head, control actors)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rayinfra import runtime
from rayinfra.config import RayinfraConfig, load_config
from rayinfra.connection import ConnectionInfo
from tests.conftest import FIXTURES, RuntimeSpec, make_runtime_spec

# Test-only classes: `fixture` gets user code through its runtime_env (a shipped module and a
# handler distribution on PYTHONPATH); `knee` runs the capacity-knee handler.
SESSION_TOML = f"""
[scheduler]
unschedulable_timeout_s = 2.0
queue_poll_interval_s = 0.2
executor_start_timeout_s = 15.0

[classes.cpu_short]
max_attempts = 1

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

[classes.knee]
num_cpus = 0.5
min_limit = 1
initial_limit = 2
max_limit = 40
runtime_env = {{env_vars = {{PYTHONPATH = "{FIXTURES / "handlers"}"}}}}
"""


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
    report = runtime.start(config)
    assert report.launched_head
    try:
        yield Runtime(spec=spec, config=config, info=report.info)
    finally:
        runtime.stop(config.state.dir, timeout_s=30, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)

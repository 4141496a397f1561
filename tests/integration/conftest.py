"""The session-scoped runtime most integration tests share (one Ray head, control actors)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rayinfra import runtime
from rayinfra.config import RayinfraConfig, load_config
from rayinfra.connection import ConnectionInfo
from tests.conftest import RuntimeSpec, make_runtime_spec


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
    spec = make_runtime_spec("ris")
    config = load_config(env=spec.env()).config
    report = runtime.start(config)
    assert report.launched_head
    try:
        yield Runtime(spec=spec, config=config, info=report.info)
    finally:
        runtime.stop(config.state.dir, timeout_s=30, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)

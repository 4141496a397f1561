"""`rayinfra start --services`, `services ...`, `logs` and `stop --keep-services` as a user runs
them: real CLI subprocesses against their own head, with process services (redis-server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import RuntimeSpec, free_port, make_runtime_spec

pytestmark = pytest.mark.e2e

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]


@pytest.fixture
def svc_spec() -> Iterator[RuntimeSpec]:
    port = free_port()
    toml = f"""
[services]
profile = "local"
stop_timeout_s = 3

[services.definitions.kv]
driver = "process"
argv = ["redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
ports = [{port}]
required = true
health = {{ kind = "redis", port = {port}, interval_s = 0.5 }}

[services.definitions.broken]
driver = "process"
argv = ["/nonexistent/broken-server"]
required = true

[services.definitions.after-broken]
driver = "process"
argv = ["sleep", "600"]
depends_on = ["broken"]
"""
    spec = make_runtime_spec("rcs", toml)
    yield spec
    shutil.rmtree(spec.root, ignore_errors=True)


def cli(spec: RuntimeSpec, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**spec.env(), "COLUMNS": "200"}
    return subprocess.run(
        [*RAYINFRA, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def dspy_agent(spec: RuntimeSpec, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**spec.env(), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "rayinfra.cli.dspy_agent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def kv_pid(spec: RuntimeSpec) -> int:
    st = cli(spec, "services", "status", "kv", "--json")
    assert st.returncode == 0, st.stderr
    row = json.loads(st.stdout)["kv"]
    assert row["status"] == "running", row
    return int(row["container_id"].split("-")[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_services_lifecycle_through_the_cli(svc_spec: RuntimeSpec) -> None:
    started = cli(svc_spec, "start", "--daemon", "--services", "kv")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "kv" in started.stdout and "healthy" in started.stdout
    try:
        pid = kv_pid(svc_spec)

        logs = cli(svc_spec, "logs", "kv", "--tail", "2", "--json")
        assert logs.returncode == 0, logs.stderr
        lines = [json.loads(x) for x in logs.stdout.splitlines()]
        assert len(lines) == 2 and all(ln["service_name"] == "kv" for ln in lines)

        comp = cli(svc_spec, "logs", "scheduler", "--tail", "5")
        assert comp.returncode == 0, comp.stderr
        assert comp.stdout.strip()

        bad = cli(svc_spec, "services", "start", "ghost")
        assert bad.returncode == 2 and "unknown service 'ghost'" in bad.stderr

        failing = cli(svc_spec, "services", "start", "after-broken")
        assert failing.returncode == 1, failing.stdout
        assert "failed" in failing.stdout and "blocked" in failing.stdout

        kept = cli(svc_spec, "stop", "--keep-services")
        assert kept.returncode == 0, kept.stderr
        assert alive(pid)  # outlived the whole runtime

        # the original CLI's spelling: returns once ready (the old Python client blocks on it)
        again = dspy_agent(svc_spec, "start", "--workspace", str(svc_spec.root), "--services", "kv")
        assert again.returncode == 0, again.stdout + again.stderr
        assert kv_pid(svc_spec) == pid  # adopted, not duplicated
        st = dspy_agent(svc_spec, "status")
        assert st.returncode == 0 and "🟢 kv" in st.stdout, st.stdout
        lg = dspy_agent(svc_spec, "logs", "--service", "kv", "-n", "1")
        assert lg.returncode == 0 and len(lg.stdout.splitlines()) == 1, lg.stdout
    finally:
        stopped = dspy_agent(svc_spec, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "service kv: stopped" in stopped.stdout
    assert not alive(pid)
    after = dspy_agent(svc_spec, "status")
    assert after.returncode == 0 and "Services not running" in after.stdout
    bad = dspy_agent(svc_spec, "start", "--workspace", "/nonexistent/ws")
    assert bad.returncode == 2

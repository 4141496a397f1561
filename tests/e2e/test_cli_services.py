"""`rayinfra start --services`, `services ...`, `logs` and `stop --keep-services` as a user runs
them: real CLI subprocesses against their own head, with process services (redis-server).

`services ...` and `logs` are gRPC clients of the gateway, never Ray drivers: they run here in a
process where `import ray` fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from rayinfra.api import stubs
from rayinfra.config import dial_addr, load_config
from tests.conftest import RuntimeSpec, free_port, make_runtime_spec

pytestmark = pytest.mark.e2e

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
# the same CLI in a process that cannot import Ray (what needs no Ray driver must not join Ray)
NO_RAY = [
    sys.executable,
    "-c",
    "import sys; sys.modules['ray'] = None; from rayinfra.cli.main import main; main()",
]


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

[services.definitions.old-db]  # dropped from the config halfway through (must stay last)
driver = "process"
argv = ["sleep", "600"]
"""
    spec = make_runtime_spec("rcs", toml)
    yield spec
    shutil.rmtree(spec.root, ignore_errors=True)


def cli(spec: RuntimeSpec, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return cli_input(spec, "", *args, timeout=timeout)


def cli_input(
    spec: RuntimeSpec, stdin: str, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``rayinfra ARGS``; every command but ``start`` and ``stop`` runs without Ray."""
    env = {**spec.env(), "COLUMNS": "200"}
    argv = RAYINFRA if args[0] in ("start", "stop") else NO_RAY
    return subprocess.run(
        [*argv, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
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


def service_pid(spec: RuntimeSpec, name: str = "kv", status: str = "running") -> int:
    st = cli(spec, "services", "status", name, "--json")
    assert st.returncode == 0, st.stderr
    row = json.loads(st.stdout)[name]
    assert row["status"] == status, row
    return int(row["container_id"].split("-")[0])


def grpc_status(spec: RuntimeSpec, name: str) -> str:
    """The service's status as GetServicesStatus reports it (env-manager gRPC, no token)."""
    epb, epb_grpc = stubs.env_manager()
    addr = dial_addr(load_config(env=spec.env()).config.gateway.env_manager_grpc_addr)
    with grpc.insecure_channel(addr) as channel:
        st = epb_grpc.EnvManagerServiceStub(channel).GetServicesStatus(
            epb.GetServicesStatusRequest(service_names=[name]), timeout=30
        )
    return str(st.services[name].status)


def drop_old_db(spec: RuntimeSpec) -> None:
    """Edit the config file as a user would: the old-db service is gone from it."""
    text = spec.config_path.read_text()
    spec.config_path.write_text(text[: text.index("[services.definitions.old-db]")])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(300)
def test_services_lifecycle_through_the_cli(svc_spec: RuntimeSpec) -> None:
    started = cli(svc_spec, "start", "--daemon", "--services", "kv,old-db")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "kv" in started.stdout and "healthy" in started.stdout
    old_db = service_pid(svc_spec, "old-db")
    try:
        pid = service_pid(svc_spec)

        logs = cli(svc_spec, "logs", "kv", "--tail", "2", "--json")
        assert logs.returncode == 0, logs.stderr
        lines = [json.loads(x) for x in logs.stdout.splitlines()]
        assert len(lines) == 2 and all(ln["service_name"] == "kv" for ln in lines)
        assert all(isinstance(ln["timestamp"], float) for ln in lines)
        none = cli(svc_spec, "logs", "kv", "--tail", "0")
        assert none.returncode == 0 and none.stdout == "", none.stdout

        # a control actor's log, read from Ray's session logs by the gateway
        comp = cli(svc_spec, "logs", "scheduler", "--tail", "5")
        assert comp.returncode == 0, comp.stderr
        assert 1 <= len(comp.stdout.splitlines()) <= 5, comp.stdout
        comp_json = cli(svc_spec, "logs", "gateway", "--tail", "1", "--json")
        assert comp_json.returncode == 0, comp_json.stderr
        assert json.loads(comp_json.stdout)["service_name"] == "gateway"
        no_actor = cli(svc_spec, "logs", "executor-nope-0")
        assert no_actor.returncode == 2 and "runtime actors: scheduler" in no_actor.stderr
        no_service = cli(svc_spec, "logs", "ghost")
        assert no_service.returncode == 2, no_service.stderr
        assert "unknown service 'ghost'" in no_service.stderr and "known:" in no_service.stderr

        bad = cli(svc_spec, "services", "start", "ghost")
        assert bad.returncode == 2 and "unknown service 'ghost'" in bad.stderr

        failing = cli(svc_spec, "services", "start", "after-broken")
        assert failing.returncode == 1, failing.stdout
        assert "failed" in failing.stdout and "blocked" in failing.stdout
        not_running = cli(svc_spec, "services", "stop", "after-broken")
        assert not_running.returncode == 0 and "not running" in not_running.stdout
        bad_restart = cli(svc_spec, "services", "restart", "ghost")
        assert bad_restart.returncode == 2 and "unknown service 'ghost'" in bad_restart.stderr
        restarted = cli(svc_spec, "services", "restart", "kv")
        assert restarted.returncode == 0 and "restarted" in restarted.stdout, restarted.stderr
        assert not alive(pid)
        pid = service_pid(svc_spec)  # a new process
        pulled = cli(svc_spec, "services", "pull", "127.0.0.1:9/none/x:1")
        assert pulled.returncode == 1 and "pull failed" in pulled.stderr, pulled.stderr

        kept = cli(svc_spec, "stop", "--keep-services")
        assert kept.returncode == 0, kept.stderr
        assert alive(pid) and alive(old_db)  # outlived the whole runtime
        drop_old_db(svc_spec)

        # the original CLI's spelling: returns once ready (the old Python client blocks on it)
        again = dspy_agent(svc_spec, "start", "--workspace", str(svc_spec.root), "--services", "kv")
        assert again.returncode == 0, again.stdout + again.stderr
        assert service_pid(svc_spec) == pid  # adopted, not duplicated
        # what the config no longer has is listed, kept running, and pruned only when asked
        assert service_pid(svc_spec, "old-db", "orphaned") == old_db
        assert grpc_status(svc_spec, "old-db") == "orphaned"
        declined = cli_input(svc_spec, "n\n", "services", "prune")
        assert declined.returncode == 1 and "old-db" in declined.stdout, declined.stdout
        assert alive(old_db)
        pruned = cli(svc_spec, "services", "prune", "--yes")
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "old-db" in pruned.stdout and "stopped" in pruned.stdout
        assert not alive(old_db)
        listed = cli(svc_spec, "services", "status", "--json")
        assert "old-db" not in json.loads(listed.stdout)
        nothing = cli(svc_spec, "services", "prune")
        assert nothing.returncode == 0 and "no orphaned services" in nothing.stdout
        st = dspy_agent(svc_spec, "status")
        assert st.returncode == 0 and "🟢 kv" in st.stdout, st.stdout
        lg = dspy_agent(svc_spec, "logs", "--service", "kv", "-n", "1")
        assert lg.returncode == 0 and len(lg.stdout.splitlines()) == 1, lg.stdout
    finally:
        cli(svc_spec, "services", "prune", "--yes")  # `stop` leaves an orphan running
        stopped = dspy_agent(svc_spec, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "service kv: stopped" in stopped.stdout
    assert not alive(pid)
    after = dspy_agent(svc_spec, "status")
    assert after.returncode == 0 and "Services not running" in after.stdout
    bad = dspy_agent(svc_spec, "start", "--workspace", "/nonexistent/ws")
    assert bad.returncode == 2

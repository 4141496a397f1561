"""Security of a running runtime (SECURITY.md), against the session runtime:

- every TCP port the runtime's processes listen on is bound to loopback, the Ray dashboard's
  included (it listens on 127.0.0.1 unless ``ray.dashboard_host`` says otherwise), and the
  dashboard, which accepts jobs, refuses them without Ray's token;
- the state dir is 0700 and what holds secrets in it is 0600, and a start over a state dir
  that an earlier version left 0755 tightens it;
- a ``shell`` task is refused at admission in a class without ``allow_shell`` (every default
  class), even from a trusted caller, on every way in: the Python client over actor handles,
  both gRPC services, HTTP, workflow definitions; nothing is queued. The session runtime's
  ``cpu_short`` allows shell (tests/integration/conftest.py), so the same task runs there.

- StartServices' overrides, which can change what a service runs, need the token.

(Gateway auth on every gRPC/HTTP port: test_gateway_auth.py, which also checks that no token
reaches a log; TLS: test_gateway_tls.py.)
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import ray

from rayinfra import AgentInfraSync, runtime
from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.config import NAMESPACE, dial_addr
from rayinfra.connection import connection_path
from rayinfra.errors import ClassPolicyError, TaskNotFoundError
from rayinfra.head import session_members
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ listening sockets


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} write it (32-bit words in host byte order)."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _listeners() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of this network namespace."""
    out: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            out[int(fields[9])] = (str(_address(host)), int(port, 16))
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    except OSError:  # the process ended meanwhile
        pass
    return inodes


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def runtime_listeners(rt: Runtime) -> dict[int, str]:
    """Port -> address of every TCP listener of the runtime: the head's session (the Ray head,
    its raylet, GCS, dashboard and agents, and every worker: control actors, executors)."""
    assert rt.info.head_pid is not None
    listening = _listeners()
    found: dict[int, str] = {}
    for pid in session_members(rt.info.head_pid):
        for inode in _socket_inodes(pid):
            if inode in listening:
                addr, port = listening[inode]
                found[port] = addr
    return found


def test_every_port_of_the_runtime_listens_on_loopback_only(rt: Runtime) -> None:
    servers = ray.get(ray.get_actor("gateway", namespace=NAMESPACE).serving.remote())
    assert all(v.startswith("serving") for v in servers.values()), servers
    found = runtime_listeners(rt)
    # the check sees what it must: every configured Ray port and the gateway's four
    gateway = rt.config.gateway
    expected = {
        **rt.config.ray.named_ports(),
        **{k: int(dial_addr(v).rsplit(":", 1)[1]) for k, v in gateway.addresses().items()},
    }
    missing = {name: port for name, port in expected.items() if port not in found}
    assert not missing, (missing, found)
    exposed = {port: addr for port, addr in found.items() if not _is_loopback(addr)}
    assert not exposed, f"listening beyond loopback: {exposed}"
    # the dashboard by default: 127.0.0.1 exactly (not 0.0.0.0, not a mapped all-interfaces)
    assert rt.config.ray.dashboard_host == "127.0.0.1"  # the test config leaves the default
    dashboard = found[rt.config.ray.dashboard_port]
    assert ipaddress.ip_address(dashboard) == ipaddress.ip_address("127.0.0.1"), dashboard


def test_rays_http_ports_take_no_command_without_rays_token(rt: Runtime, tmp_path: Path) -> None:
    """The dashboard's job API runs commands, and so do the ones behind it (the dashboard
    agent's job API, the runtime-env agent): without Ray's token 401, with a wrong one 403,
    nothing runs; with the token the dashboard answers."""
    marker = tmp_path / "dashboard-ran-this"
    job = {"entrypoint": f"touch {marker}", "submission_id": uid("sec-job")}
    token = Path(rt.config.ray_token_path).read_text().strip()
    ray_cfg = rt.config.ray
    endpoints = {
        "dashboard_port": "/api/jobs/",
        "dashboard_agent_listen_port": "/api/job_agent/jobs/",
        "runtime_env_agent_port": "/get_or_create_runtime_env",
    }
    for port_key, path in endpoints.items():
        url = f"http://127.0.0.1:{getattr(ray_cfg, port_key)}{path}"
        r = httpx.post(url, json=job, timeout=30)
        assert r.status_code == 401, (port_key, r.status_code, r.text)
    wrong = {"authorization": "Bearer not-rays-token"}
    with httpx.Client(base_url=rt.info.dashboard_url or "", timeout=30) as c:
        r = c.post("/api/jobs/", json=job, headers=wrong)
        assert r.status_code == 403, r.text
        r = c.get("/api/jobs/", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert job["submission_id"] not in {j.get("submission_id") for j in r.json()}
    time.sleep(1.0)
    assert not marker.exists()


def test_service_overrides_need_the_token(rt: Runtime) -> None:
    """StartServices' overrides can set what a service runs (argv, image, volumes): without the
    token (auth off on loopback) PERMISSION_DENIED naming ``overrides``, and nothing starts."""
    with grpc.insecure_channel(dial_addr(rt.config.gateway.env_manager_grpc_addr)) as ch:
        env = epb_grpc.EnvManagerServiceStub(ch)
        before = env.GetServicesStatus(epb.GetServicesStatusRequest(service_names=["victim"]))
        for md in ((), (("authorization", "Bearer not-the-token"),)):
            req = epb.StartServicesRequest(
                service_names=["victim"], overrides={"victim.env.RI_MARK": '"x"'}
            )
            with pytest.raises(grpc.RpcError) as e:
                next(iter(env.StartServices(req, metadata=md, timeout=10)))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (e.value.details() or "").startswith("overrides: ")
        after = env.GetServicesStatus(epb.GetServicesStatusRequest(service_names=["victim"]))
    was, now = before.services["victim"], after.services["victim"]
    assert (now.status, now.started_at) == (was.status, was.started_at)


# ------------------------------------------------------------------ file modes


def test_state_dir_is_0700_and_its_secrets_0600(rt: Runtime) -> None:
    state = rt.config.state.dir
    assert mode(state) == 0o700
    for path in (
        connection_path(state),
        token_path(rt.config),  # the gateway's local token
        rt.config.ray_token_path,
        state / "config.effective.json",  # may hold gateway.auth_token
    ):
        assert path.parent == state and mode(path) == 0o600, (path, oct(mode(path)))


def test_a_start_over_a_looser_state_dir_makes_it_0700(rt: Runtime) -> None:
    """As an earlier version left it (0755): ``rayinfra start`` (here: on the running runtime,
    the idempotent path) tightens it; the runtime is undisturbed."""
    state = rt.config.state.dir
    state.chmod(0o755)
    try:
        report = runtime.start(rt.config)
        assert report.already_running and report.info.head_pid == rt.info.head_pid
        assert mode(state) == 0o700
    finally:
        state.chmod(0o700)


# ------------------------------------------------------------------ shell tasks and classes

SHELL = {"type": "shell", "argv": ["touch", "/tmp/rayinfra-class-policy-must-not-exist"]}
REFUSING = "gpu_short"  # a default class: allow_shell = false


@pytest.fixture(scope="module")
def infra(rt: Runtime) -> Iterator[AgentInfraSync]:
    client = AgentInfraSync(config=rt.config).start()  # actor handles: a trusted caller
    assert client._infra.transport.kind == "actors"
    try:
        yield client
    finally:
        client.stop()


def _not_queued(infra: AgentInfraSync, *task_ids: str) -> None:
    for tid in task_ids:
        with pytest.raises(TaskNotFoundError):
            infra.get_task_status(tid)


def test_shell_in_a_class_without_allow_shell_is_refused_over_actor_handles(
    rt: Runtime, infra: AgentInfraSync
) -> None:
    assert rt.config.classes[REFUSING].allow_shell is False
    assert rt.config.classes["cpu_short"].allow_shell is True  # the session config's
    tid = uid("sec-shell-actor")
    with pytest.raises(ClassPolicyError) as e:
        infra.submit_task(tid, SHELL, task_class=REFUSING)
    assert e.value.field == "payload.type" and "allow_shell" in e.value.message
    with pytest.raises(ClassPolicyError) as e:  # the alias names the same class
        infra.submit_task(tid, {**SHELL, "type": "Shell"}, task_class="gpu")
    _not_queued(infra, tid)
    # the same task in a class that allows shell runs
    ok = uid("sec-shell-ok")
    infra.submit_task(ok, {"type": "shell", "argv": ["echo", "allowed"]}, task_class="cpu_short")
    done = infra.wait_task(ok, timeout=60)
    assert done["status"] == "completed" and done["result_payload"]["stdout"] == "allowed\n"


def test_shell_in_a_class_without_allow_shell_is_refused_over_grpc(
    rt: Runtime, infra: AgentInfraSync
) -> None:
    """With the token (a trusted caller): PERMISSION_DENIED naming the field and the setting,
    no hint to send a token (it would not help); nothing queued on either service."""
    md = (("authorization", f"Bearer {token_path(rt.config).read_text().strip()}"),)
    payload = {"type": "shell", "argv": json.dumps(SHELL["argv"])}
    tid, exec_id = uid("sec-shell-grpc"), uid("sec-shell-exec")
    with grpc.insecure_channel(dial_addr(rt.config.gateway.orchestrator_grpc_addr)) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        req = opb.SubmitTaskRequest(id=tid, payload=payload, **{"class": REFUSING})
        with pytest.raises(grpc.RpcError) as e:
            stub.SubmitTask(req, metadata=md, timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = e.value.details() or ""
    assert details.startswith("payload.type: ") and f"[classes.{REFUSING}] allow_shell" in details
    assert "present the token" not in details
    with grpc.insecure_channel(dial_addr(rt.config.gateway.env_manager_grpc_addr)) as ch:
        env = epb_grpc.EnvManagerServiceStub(ch)
        req = epb.ExecuteTaskRequest(
            task_id=exec_id, workload_class=REFUSING, payload=payload, timeout_seconds=10
        )
        with pytest.raises(grpc.RpcError) as e:
            env.ExecuteTask(req, metadata=md, timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "payload.type" in (e.value.details() or "")
    _not_queued(infra, tid, exec_id)
    assert not Path(SHELL["argv"][1]).exists()


def test_shell_in_a_class_without_allow_shell_is_refused_over_http(
    rt: Runtime, infra: AgentInfraSync
) -> None:
    """403 naming the field, for a task and for a workflow step, with the token."""
    auth = {"authorization": f"Bearer {token_path(rt.config).read_text().strip()}"}
    base = f"http://{dial_addr(rt.config.gateway.orchestrator_http_addr)}"
    tid = uid("sec-shell-http")
    step: dict[str, Any] = {"id": "a", "name": "A", "type": "task"}
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post(
            "/queue/submit", json={"id": tid, "class": REFUSING, "payload": SHELL}, headers=auth
        )
        assert r.status_code == 403, r.text
        assert r.json()["field"] == "payload.type" and "allow_shell" in r.json()["error"]
        assert c.get(f"/tasks/{tid}").status_code == 404
        # a workflow is refused when it is defined, not when its step comes due
        refused = {"name": "x", "nodes": [{**step, "task": {"class": REFUSING, "payload": SHELL}}]}
        r = c.post("/workflows", json=refused, headers=auth)
        assert r.status_code == 403, r.text
        assert r.json()["field"] == "nodes[0].task.payload.type"
        allowed = {
            "name": "y",
            "nodes": [{**step, "task": {"class": "cpu_short", "payload": SHELL}}],
        }
        assert c.post("/workflows", json=allowed, headers=auth).status_code == 201
    _not_queued(infra, tid)

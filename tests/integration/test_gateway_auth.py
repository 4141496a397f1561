"""Gateway auth over real loopback gRPC and HTTP.

Two runtimes:

- a module-scoped runtime of its own whose config sets ``[gateway] auth = "required"`` (the token
  is the local token file's, ``<state dir>/gateway.token``), started and stopped with the real
  ``rayinfra start --daemon`` / ``rayinfra stop`` CLI (``runtime_cli.cli_runtime``): every gRPC
  call (both services, unary and streaming) and every HTTP request (:9097 and :50101 routes)
  without the right ``authorization: Bearer <token>`` is UNAUTHENTICATED / 401 and does nothing;
  with it, tasks run.
  gRPC health checking and reflection are behind the token too (decided: the interceptor guards
  the whole server, so a monitoring probe or ``grpcurl`` sends ``-H 'authorization: Bearer ...'``
  like any other client; an unauthenticated caller learns nothing about the API surface).
- the session runtime (auth "auto" on loopback = off): calls without a token are served, but
  code-running tasks (``shell``, ``python``) need the local token: PERMISSION_DENIED / 403 with
  nothing queued, accepted with it. (test_gateway.py covers a gRPC ``shell`` submit with the token
  and the bare 403/PERMISSION_DENIED codes; this file adds "nothing queued", wrong tokens, the
  ``python`` type, ExecuteTask and the HTTP path with the token.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import ray

from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.config import NAMESPACE, RayinfraConfig, dial_addr
from tests.conftest import SHELL_CLASSES_TOML, RuntimeSpec
from tests.integration.conftest import Runtime
from tests.support.polling import wait_until
from tests.support.runtime_cli import cli_runtime

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()
REPO = Path(__file__).parents[2]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def addr(config: RayinfraConfig, key: str) -> str:
    return dial_addr(getattr(config.gateway, key))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def submit_req(tid: str, payload: dict[str, str]) -> Any:
    return opb.SubmitTaskRequest(id=tid, payload=payload)


def rpc_error(fn: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value


FINAL = ("completed", "failed", "cancelled")


def wait_status(stub: Any, tid: str, md: Any = (), timeout: float = 60) -> Any:
    def final() -> Any:
        st = stub.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid), metadata=md)
        return st if st.status in FINAL else None

    return wait_until(f"{tid} to finish", final, timeout)


def wait_http_task(c: httpx.Client, tid: str, headers: dict[str, str], timeout: float = 60) -> Any:
    def final() -> Any:
        r = c.get(f"/tasks/{tid}", headers=headers)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["status"] in FINAL else None

    return wait_until(f"{tid} to finish", final, timeout)


# ============================================================================ auth = "required"


@dataclass
class Secured:
    spec: RuntimeSpec
    config: RayinfraConfig
    token: str


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """A runtime of this module's own with ``[gateway] auth = "required"``, via the real CLI
    (:func:`tests.support.runtime_cli.cli_runtime`: it waits for Health, asked with the token)."""
    with cli_runtime("rauth", 'auth = "required"', SHELL_CLASSES_TOML) as rt:
        assert "launched local head" in rt.start_output
        config = rt.config
        assert config.gateway.auth_required() and config.gateway.auth_token is None
        token = token_path(config).read_text().strip()
        assert len(token) >= 32
        yield Secured(spec=rt.spec, config=config, token=token)


#: (label, metadata sent, text the UNAUTHENTICATED message must contain)
BAD_CREDENTIALS = [
    ("missing", (), "missing authorization"),
    ("wrong-token", (("authorization", "Bearer not-the-token"),), "invalid token"),
    ("wrong-scheme", None, "Bearer <token>"),  # Basic <the right token>
    ("empty-bearer", (("authorization", "Bearer "),), "Bearer <token>"),
]


def _bad_md(kind: Any, token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Basic {token}"),) if kind is None else kind


def _orch_unary(ch: grpc.Channel, tid: str, md: Any) -> Any:
    return opb_grpc.OrchestratorServiceStub(ch).SubmitTask(
        submit_req(tid, {"type": "noop"}), metadata=md, timeout=10
    )


def _orch_stream(ch: grpc.Channel, tid: str, md: Any) -> Any:
    call = opb_grpc.OrchestratorServiceStub(ch).StreamTaskResults(
        opb.StreamTaskResultsRequest(task_ids=[tid], include_completed=True),
        metadata=md,
        timeout=10,
    )
    return next(iter(call))


def _env_unary(ch: grpc.Channel, tid: str, md: Any) -> Any:
    return epb_grpc.EnvManagerServiceStub(ch).ExecuteTask(
        epb.ExecuteTaskRequest(task_id=tid, payload={"type": "noop"}), metadata=md, timeout=10
    )


def _env_stream(ch: grpc.Channel, tid: str, md: Any) -> Any:
    call = epb_grpc.EnvManagerServiceStub(ch).StreamLogs(
        epb.StreamLogsRequest(service_name="ghost", tail=1), metadata=md, timeout=10
    )
    return next(iter(call))


GRPC_CALLS = {
    "orchestrator-unary-SubmitTask": ("orchestrator_grpc_addr", _orch_unary),
    "orchestrator-stream-StreamTaskResults": ("orchestrator_grpc_addr", _orch_stream),
    "env-unary-ExecuteTask": ("env_manager_grpc_addr", _env_unary),
    "env-stream-StreamLogs": ("env_manager_grpc_addr", _env_stream),
}


@pytest.mark.parametrize("call", list(GRPC_CALLS))
@pytest.mark.parametrize(
    ("label", "md", "text"), BAD_CREDENTIALS, ids=[b[0] for b in BAD_CREDENTIALS]
)
def test_grpc_without_the_token_is_unauthenticated_and_does_nothing(
    secured: Secured, call: str, label: str, md: Any, text: str
) -> None:
    key, fn = GRPC_CALLS[call]
    tid = uid(f"auth-{label}")
    with grpc.insecure_channel(addr(secured.config, key)) as ch:
        err = rpc_error(lambda: fn(ch, tid, _bad_md(md, secured.token)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    assert text in (err.details() or "")
    # nothing was queued under that id (SubmitTask and ExecuteTask carried one)
    with grpc.insecure_channel(addr(secured.config, "orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        gone = rpc_error(
            lambda: stub.GetTaskStatus(
                opb.GetTaskStatusRequest(task_id=tid), metadata=bearer(secured.token)
            )
        )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_with_the_token_runs_tasks_on_both_services(secured: Secured) -> None:
    md = bearer(secured.token)
    with grpc.insecure_channel(addr(secured.config, "orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        tid = uid("auth-ok")
        res = stub.SubmitTask(submit_req(tid, {"type": "echo", "x": "1"}), metadata=md)
        assert (res.success, res.task_id, res.error) == (True, tid, "")
        st = wait_status(stub, tid, md)
        assert (st.status, dict(st.result)) == ("completed", {"x": "1"})
        # the scheme is case-insensitive (RFC 7235)
        lower = (("authorization", f"bearer {secured.token}"),)
        assert stub.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid), metadata=lower).status == (
            "completed"
        )
        # streaming with the token: the finished task's state comes first
        call = stub.StreamTaskResults(
            opb.StreamTaskResultsRequest(task_ids=[tid], include_completed=True), metadata=md
        )
        first = next(iter(call))
        call.cancel()
        assert (first.task_id, first.status, dict(first.result)) == (tid, "completed", {"x": "1"})
        # the auth token also makes the caller trusted for code-running tasks
        sh = uid("auth-shell")
        stub.SubmitTask(submit_req(sh, {"type": "shell", "argv": '["echo", "hi"]'}), metadata=md)
        st = wait_status(stub, sh, md)
        assert (st.status, st.result["stdout"]) == ("completed", "hi\n")
    with grpc.insecure_channel(addr(secured.config, "env_manager_grpc_addr")) as ch:
        env = epb_grpc.EnvManagerServiceStub(ch)
        ex = env.ExecuteTask(
            epb.ExecuteTaskRequest(
                task_id=uid("auth-exec"), payload={"type": "echo", "y": "2"}, timeout_seconds=60
            ),
            metadata=md,
        )
        assert (ex.success, dict(ex.result), ex.error) == (True, {"y": "2"}, "")
        avail = env.GetResourceAvailability(
            epb.GetResourceAvailabilityRequest(workload_class="cpu_short"), metadata=md
        )
        assert avail.capacity >= 1 and avail.hardware.cpu_cores >= 1
        # past auth, a streaming RPC reaches the servicer: NOT_FOUND names the service
        err = rpc_error(lambda: _env_stream(ch, "", md))
        assert err.code() == grpc.StatusCode.NOT_FOUND and "ghost" in (err.details() or "")


@pytest.mark.parametrize("key", ["orchestrator_grpc_addr", "env_manager_grpc_addr"])
def test_grpc_health_and_reflection_need_the_token_too(secured: Secured, key: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    service = stubs.ORCHESTRATOR_SERVICE if key.startswith("orch") else stubs.ENV_MANAGER_SERVICE

    def list_services(rs: Any, md: Any) -> list[str]:
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(iter(rs.ServerReflectionInfo(iter([req]), metadata=md, timeout=10)))
        return sorted(s.name for s in resp.list_services_response.service)

    with grpc.insecure_channel(addr(secured.config, key)) as ch:
        hs = health_pb2_grpc.HealthStub(ch)
        rs = reflection_pb2_grpc.ServerReflectionStub(ch)
        check = health_pb2.HealthCheckRequest(service=service)
        for md in ((), (("authorization", "Bearer nope"),)):
            err = rpc_error(partial(hs.Check, check, metadata=md, timeout=10))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            err = rpc_error(partial(list_services, rs, md))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = hs.Check(check, metadata=bearer(secured.token), timeout=10)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        assert list_services(rs, bearer(secured.token)) == sorted(
            [service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
        )


def test_grpcurl_needs_dash_h_with_auth_required(secured: Secured) -> None:
    """What the docs tell grpcurl users: reflection (list) and calls need ``-H``."""
    target = addr(secured.config, "orchestrator_grpc_addr")
    base = [sys.executable, "-m", "tests.support.grpcurl", "-plaintext"]

    def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60, cwd=REPO)

    denied = grpcurl(target, "list")
    assert denied.returncode == 1
    assert "code = Unauthenticated" in denied.stderr and denied.stdout == ""
    header = f"authorization: Bearer {secured.token}"
    listed = grpcurl("-H", header, target, "list")
    assert listed.returncode == 0, listed.stderr
    assert stubs.ORCHESTRATOR_SERVICE in listed.stdout.split()
    health = grpcurl("-H", header, target, f"{stubs.ORCHESTRATOR_SERVICE}/Health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["healthy"] is True


#: every route of both HTTP apps (docs and the OpenAPI document included, and one that is not
#: a route: the 401 comes before routing)
HTTP_ROUTES = [
    ("orchestrator_http_addr", "GET", "/health", 200),
    ("orchestrator_http_addr", "GET", "/metrics", 200),
    ("orchestrator_http_addr", "GET", "/queue/status", 200),
    ("orchestrator_http_addr", "POST", "/queue/submit", 200),
    ("orchestrator_http_addr", "GET", "/tasks/no-such-task", 404),
    ("orchestrator_http_addr", "GET", "/slurm/status/no-such-task", 404),
    ("orchestrator_http_addr", "GET", "/workflows", 200),
    ("orchestrator_http_addr", "GET", "/openapi.json", 200),
    ("orchestrator_http_addr", "GET", "/docs", 200),
    ("orchestrator_http_addr", "GET", "/no-such-route", 404),
    ("env_manager_http_addr", "GET", "/health", 200),
    ("env_manager_http_addr", "GET", "/metrics", 200),
    ("env_manager_http_addr", "GET", "/openapi.json", 200),
    ("env_manager_http_addr", "GET", "/no-such-route", 404),
]
HTTP_BAD = [
    ("missing", None, "missing authorization"),
    ("wrong-token", "Bearer not-the-token", "invalid token"),
    ("wrong-scheme", "Basic {token}", "Bearer <token>"),
    ("empty-bearer", "Bearer", "Bearer <token>"),
]


def _route_id(r: tuple[str, str, str, int]) -> str:
    return f"{'orch' if r[0].startswith('orch') else 'env'}-{r[1]}-{r[2]}"


@pytest.mark.parametrize("route", HTTP_ROUTES, ids=[_route_id(r) for r in HTTP_ROUTES])
def test_http_needs_the_token_on_every_route(
    secured: Secured, route: tuple[str, str, str, int]
) -> None:
    key, method, path, ok_status = route
    tid = uid("auth-http")
    body = {"id": tid, "payload": {"type": "noop"}} if method == "POST" else None
    with httpx.Client(base_url=f"http://{addr(secured.config, key)}", timeout=30) as c:
        for _label, header, text in HTTP_BAD:
            headers = (
                {} if header is None else {"authorization": header.format(token=secured.token)}
            )
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (header, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert text in r.json()["error"]
        good = {"authorization": f"Bearer {secured.token}"}
        r = c.request(method, path, json=body, headers=good)
        assert r.status_code == ok_status, r.text
    if method == "POST":  # only the request with the token queued the task
        assert r.json() == {"ok": True, "id": tid}


def test_http_submit_with_the_token_runs(secured: Secured) -> None:
    good = {"authorization": f"Bearer {secured.token}"}
    base = f"http://{addr(secured.config, 'orchestrator_http_addr')}"
    with httpx.Client(base_url=base, timeout=30) as c:
        tid = uid("auth-http-ok")
        r = c.post(
            "/queue/submit", json={"id": tid, "payload": {"type": "echo", "a": [1]}}, headers=good
        )
        assert r.status_code == 200 and r.json() == {"ok": True, "id": tid}
        st = wait_http_task(c, tid, good)
        assert st["status"] == "completed" and st["result"] == {"a": [1]}
        # unauthenticated reads of that task are refused as well
        assert c.get(f"/tasks/{tid}").status_code == 401


#: files meant to hold a token (0600, test_security.py checks): everything else must not
TOKEN_FILES = ("gateway.token", "ray_auth_token")


def _files_holding(root: Path, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Each secret's label -> the regular files under ``root`` (logs, state, Ray's session
    dir; symlinks not followed) that contain it, token files excepted."""
    found: dict[str, list[str]] = {label: [] for label in secrets}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.name in TOKEN_FILES:
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a file that came and went (a rotated or temp file)
            continue
        for label, secret in secrets.items():
            if secret.encode() in data:
                found[label].append(str(path.relative_to(root)))
    return found


def test_no_token_reaches_a_log(secured: Secured) -> None:
    """Wrong-token and right-token calls on every port (both gRPC services with health, both
    HTTP apps, Ray's dashboard), tasks run with the token, then every file the runtime wrote
    (Ray's session logs of its temp dir, the state dir: head log, task output, store) is
    searched for each token, right or wrong: none holds one. A task that prints a marker shows
    that the search reaches the executors' logs, where a leaked token would most likely be."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    root = secured.spec.root
    ray_token = (secured.spec.state_dir / "ray_auth_token").read_text().strip()
    wrong = f"wrong-{uuid.uuid4().hex}"
    marker = f"log-marker-{uuid.uuid4().hex}"
    right, bad = bearer(secured.token), bearer(wrong)
    with grpc.insecure_channel(addr(secured.config, "orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        assert rpc_error(lambda: _orch_unary(ch, uid("leak"), bad)).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        refused = rpc_error(lambda: health.Check(health_pb2.HealthCheckRequest(), metadata=bad))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        health.Check(health_pb2.HealthCheckRequest(), metadata=right)
        printed, shell = uid("leak-print"), uid("leak-shell")
        python = {"type": "python", "function": "builtins:print", "args": json.dumps([marker])}
        stub.SubmitTask(submit_req(printed, python), metadata=right)
        stub.SubmitTask(submit_req(shell, {"type": "shell", "argv": '["true"]'}), metadata=right)
        assert wait_status(stub, printed, right).status == "completed"
        assert wait_status(stub, shell, right).status == "completed"
    with grpc.insecure_channel(addr(secured.config, "env_manager_grpc_addr")) as ch:
        assert rpc_error(lambda: _env_unary(ch, uid("leak"), bad)).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert _env_unary(ch, uid("leak-exec"), right).success
    for key, path in (("orchestrator_http_addr", "/health"), ("env_manager_http_addr", "/metrics")):
        with httpx.Client(base_url=f"http://{addr(secured.config, key)}", timeout=30) as c:
            for header in (f"Bearer {wrong}", f"Basic {secured.token}", "Bearer"):
                assert c.get(path, headers={"authorization": header}).status_code == 401
            assert c.get(path, headers={"authorization": f"Bearer {secured.token}"}).is_success
    with httpx.Client(base_url=f"http://{addr(secured.config, 'orchestrator_http_addr')}") as c:
        body = {"id": uid("leak-http"), "payload": {"type": "noop"}}
        for token, status in ((wrong, 401), (secured.token, 200)):
            r = c.post("/queue/submit", json=body, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == status, r.text
    dashboard = f"http://127.0.0.1:{secured.config.ray.dashboard_port}/api/jobs/"
    assert httpx.get(dashboard, headers={"authorization": f"Bearer {wrong}"}).status_code == 403
    assert httpx.get(dashboard, headers={"authorization": f"Bearer {ray_token}"}).is_success
    # Ray's log monitor and the workers flush on their own schedule: wait for the marker
    wait_until(
        "the printed marker to reach Ray's logs",
        lambda: _files_holding(root / "ray", {"marker": marker})["marker"],
        60,
        0.5,
    )
    time.sleep(1.0)  # what was written with it (the same calls' log lines) is out too
    found = _files_holding(
        root, {"gateway token": secured.token, "ray token": ray_token, "wrong token": wrong}
    )
    assert found == {"gateway token": [], "ray token": [], "wrong token": []}


# ============================================================================ session runtime (auth auto)


@pytest.fixture(scope="module")
def gw(rt: Runtime) -> Runtime:
    servers = ray.get(ray.get_actor("gateway", namespace=NAMESPACE).serving.remote())
    assert all(v.startswith("serving") for v in servers.values()), servers
    assert not rt.config.gateway.auth_required()
    return rt


def local_token(rt: Runtime) -> str:
    return token_path(rt.config).read_text().strip()


UNTRUSTED_PAYLOADS = {
    "shell": {"type": "shell", "argv": '["touch", "/tmp/rayinfra-must-not-exist"]'},
    "python": {"type": "python", "function": "os:getcwd"},
    "Shell-cased": {"type": " Shell", "argv": '["true"]'},
}
UNTRUSTED_CALLERS = {
    "no-token": (),
    "wrong-token": (("authorization", "Bearer not-the-local-token"),),
}


@pytest.mark.parametrize("caller", list(UNTRUSTED_CALLERS))
@pytest.mark.parametrize("kind", list(UNTRUSTED_PAYLOADS))
def test_untrusted_code_over_grpc_is_permission_denied_and_not_queued(
    gw: Runtime, kind: str, caller: str
) -> None:
    md = UNTRUSTED_CALLERS[caller]
    tid, exec_id = uid("auth-untrusted"), uid("auth-untrusted-exec")
    payload = UNTRUSTED_PAYLOADS[kind]
    with grpc.insecure_channel(addr(gw.config, "orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        err = rpc_error(lambda: stub.SubmitTask(submit_req(tid, payload), metadata=md))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        details = err.details() or ""
        assert "payload.type" in details and "authorization: Bearer <token>" in details
        with grpc.insecure_channel(addr(gw.config, "env_manager_grpc_addr")) as ech:
            env = epb_grpc.EnvManagerServiceStub(ech)
            req = epb.ExecuteTaskRequest(task_id=exec_id, payload=payload, timeout_seconds=10)
            err = rpc_error(lambda: env.ExecuteTask(req, metadata=md))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "payload.type" in (err.details() or "")
        for t in (tid, exec_id):  # nothing was queued
            gone = rpc_error(partial(stub.GetTaskStatus, opb.GetTaskStatusRequest(task_id=t)))
            assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert not Path("/tmp/rayinfra-must-not-exist").exists()


@pytest.mark.parametrize("kind", list(UNTRUSTED_PAYLOADS))
def test_untrusted_code_over_http_is_403_and_not_queued(gw: Runtime, kind: str) -> None:
    payload = {**UNTRUSTED_PAYLOADS[kind]}
    if "argv" in payload:
        payload["argv"] = json.loads(payload["argv"])  # HTTP payloads are native JSON
    base = f"http://{addr(gw.config, 'orchestrator_http_addr')}"
    with httpx.Client(base_url=base, timeout=30) as c:
        for headers in ({}, {"authorization": "Bearer not-the-local-token"}):
            tid = uid("auth-untrusted-http")
            r = c.post("/queue/submit", json={"id": tid, "payload": payload}, headers=headers)
            assert r.status_code == 403, r.text
            assert r.json()["field"] == "payload.type"
            assert "authenticated caller" in r.json()["error"]
            assert c.get(f"/tasks/{tid}").status_code == 404  # nothing queued


def test_the_local_token_makes_code_running_tasks_accepted(gw: Runtime) -> None:
    """HTTP with the local token (gRPC SubmitTask with it: test_gateway.py), and ExecuteTask."""
    token = local_token(gw)
    base = f"http://{addr(gw.config, 'orchestrator_http_addr')}"
    with httpx.Client(base_url=base, timeout=30) as c:
        tid = uid("auth-trusted-http")
        r = c.post(
            "/queue/submit",
            json={"id": tid, "payload": {"type": "shell", "argv": ["echo", "over http"]}},
            headers={"authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200 and r.json() == {"ok": True, "id": tid}, r.text
        st = wait_http_task(c, tid, {})
        assert st["status"] == "completed" and st["result"]["stdout"] == "over http\n"
    with grpc.insecure_channel(addr(gw.config, "env_manager_grpc_addr")) as ch:
        env = epb_grpc.EnvManagerServiceStub(ch)
        res = env.ExecuteTask(
            epb.ExecuteTaskRequest(
                task_id=uid("auth-trusted-exec"),
                payload={"type": "python", "function": "operator:mul", "args": "[6, 7]"},
                timeout_seconds=60,
            ),
            metadata=bearer(token),
        )
        assert (res.success, dict(res.result), res.error) == (True, {"result": "42"}, "")


def test_python_clients_need_the_token_when_auth_is_required(secured: Secured) -> None:
    """``GrpcTransport`` and ``ServicesClient`` without the token are refused with a typed error
    that says what to do; with it (as ``rayinfra.connect`` would send it) they work."""
    from rayinfra import AgentInfraSync, GrpcTransport
    from rayinfra.client import ServicesClient
    from rayinfra.errors import PermissionDeniedError

    orch = addr(secured.config, "orchestrator_grpc_addr")
    env_addr = addr(secured.config, "env_manager_grpc_addr")
    refused = pytest.raises(PermissionDeniedError, match="RAYINFRA_AUTH_TOKEN")
    with AgentInfraSync(transport=GrpcTransport(orch, retry_for_s=5)) as anonymous, refused:
        anonymous.submit_task(payload={"type": "noop"})
    refused = pytest.raises(PermissionDeniedError, match="RAYINFRA_AUTH_TOKEN")
    with ServicesClient(env_addr) as anonymous_services, refused:
        anonymous_services.status([])
    transport = GrpcTransport(orch, token=secured.token)
    with AgentInfraSync(transport=transport) as infra:
        tid = infra.submit_task(payload={"type": "shell", "argv": ["true"]})["task_id"]
        assert infra.wait_task(tid, timeout=60)["status"] == "completed"
        assert infra.runtime_status()["actors"]["gateway"]["state"] == "alive"
    with ServicesClient(env_addr, token=secured.token) as services:
        assert isinstance(services.status([]), dict)

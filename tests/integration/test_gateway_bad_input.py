"""Bad input over real loopback gRPC and HTTP, as a table against the session runtime.

Each row sends one bad request and asserts the exact gRPC status code / HTTP status and that the
message (and for HTTP the ``field`` of the JSON error) names the offending field. Rows that carry
a task id also check that nothing was queued under it. The first test submits a good task and the
last one checks that it is still there and completes: bad input loses nothing already accepted.
(test_gateway.py has a few of these codes in passing; this file is the systematic table.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import ray

from rayinfra.api import stubs
from rayinfra.config import NAMESPACE
from rayinfra.scheduling.tasks import MAX_TASK_ID_LEN, PRIORITY_MAX
from tests.integration.conftest import Runtime
from tests.support.gateway_clients import Clients, gateway_clients

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()
RUN = uuid.uuid4().hex[:8]
CODE = grpc.StatusCode


def tid(name: str) -> str:
    return f"bad-{RUN}-{name}"


@pytest.fixture(scope="module")
def clients(rt: Runtime) -> Iterator[Clients]:
    with gateway_clients(rt) as c:
        yield c


GOOD_ID = tid("good-before")
DUP_ID = tid("dup")


def status_of(c: Clients, task_id: str) -> Any:
    return c.orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=task_id), timeout=10)


def wait_done(c: Clients, task_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status_of(c, task_id)
        if st.status in ("completed", "failed", "cancelled"):
            return st
        time.sleep(0.1)
    raise AssertionError(f"{task_id} did not finish within {timeout}s")


def test_a_good_task_is_accepted_before_the_bad_input(clients: Clients) -> None:
    """Accepted first; the last test of this file checks it survived every bad row."""
    # it sleeps, so it is still queued or running while the bad rows arrive
    res = clients.orch.SubmitTask(
        opb.SubmitTaskRequest(id=GOOD_ID, payload={"type": "sleep", "seconds": "2"})
    )
    assert (res.success, res.task_id) == (True, GOOD_ID)
    first = clients.orch.SubmitTask(opb.SubmitTaskRequest(id=DUP_ID, payload={"type": "echo"}))
    assert first.success


# ----------------------------------------------------------------------------- gRPC table


def submit(
    task_id: str = "",
    payload: dict[str, str] | None = None,
    cls: str = "",
    priority: int = 0,
    timeout_seconds: float = 0.0,
) -> Callable[[Clients], Any]:
    def call(c: Clients) -> Any:
        req = opb.SubmitTaskRequest(
            id=task_id,
            payload=payload if payload is not None else {"type": "noop"},
            priority=priority,
            timeout_seconds=timeout_seconds,
        )
        setattr(req, "class", cls)
        return c.orch.SubmitTask(req, timeout=30)

    return call


def oversized(limit_of: Callable[[Clients], int], task_id: str) -> Callable[[Clients], Any]:
    def call(c: Clients) -> Any:
        blob = "x" * (limit_of(c) + 1)
        return submit(task_id, {"type": "noop", "blob": blob})(c)

    return call


def first_of_stream(make: Callable[[Clients], Any]) -> Callable[[Clients], Any]:
    def call(c: Clients) -> Any:
        stream = make(c)
        try:
            return next(iter(stream))
        finally:
            stream.cancel()

    return call


def raw_call(path: str, body: bytes, channel_index: int) -> Callable[[Clients], Any]:
    def call(c: Clients) -> Any:
        fn = c.channels[channel_index].unary_unary(
            path, request_serializer=None, response_deserializer=None
        )
        return fn(body, timeout=10)

    return call


@dataclass
class GrpcRow:
    id: str
    call: Callable[[Clients], Any]
    code: grpc.StatusCode
    texts: tuple[str, ...]  # each must appear in the status message
    not_queued: str = ""  # a task id that must not exist afterwards
    bug: str = ""  # a known product bug: the row is a strict xfail until it is fixed


DEEP = json.dumps({"type": "noop", "deep": json.loads("[" * 200 + "]" * 200)})

GRPC_ROWS = [
    GrpcRow(
        "submit-unknown-class",
        submit(tid("cls"), cls="nope"),
        CODE.INVALID_ARGUMENT,
        ("task_class", "unknown class 'nope'", "cpu_short"),
        tid("cls"),
    ),
    GrpcRow(
        "submit-negative-timeout",
        submit(tid("neg"), timeout_seconds=-1),
        CODE.INVALID_ARGUMENT,
        ("timeout_seconds", "-1"),
        tid("neg"),
    ),
    GrpcRow(
        "submit-nan-timeout",
        submit(tid("nan"), timeout_seconds=float("nan")),
        CODE.INVALID_ARGUMENT,
        ("timeout_seconds", "nan"),
        tid("nan"),
    ),
    GrpcRow(
        "submit-infinite-timeout",
        submit(tid("inf"), timeout_seconds=float("inf")),
        CODE.INVALID_ARGUMENT,
        ("timeout_seconds", "inf"),
        tid("inf"),
    ),
    GrpcRow(
        "submit-payload-over-the-limit",
        oversized(lambda c: c.payload_limit, tid("big")),
        CODE.INVALID_ARGUMENT,
        ("payload", "exceeds the limit of"),
        tid("big"),
    ),
    GrpcRow(
        "submit-message-over-max-request-bytes",
        oversized(lambda c: c.max_request, tid("huge")),
        CODE.RESOURCE_EXHAUSTED,
        ("larger than max",),
        tid("huge"),
    ),
    GrpcRow(
        "submit-duplicate-id-other-payload",
        submit(DUP_ID, {"type": "echo", "x": "other"}),
        CODE.ALREADY_EXISTS,
        ("task_id", DUP_ID, "already exists"),
    ),
    GrpcRow(
        "submit-id-with-a-space",
        submit("bad id"),
        CODE.INVALID_ARGUMENT,
        ("task_id", "not a valid id"),
        "bad id",
    ),
    GrpcRow(
        "submit-id-starting-with-a-dot",
        submit(".hidden"),
        CODE.INVALID_ARGUMENT,
        ("task_id", "not a valid id"),
    ),
    GrpcRow(
        "submit-id-with-dot-dot",
        submit("a..b"),
        CODE.INVALID_ARGUMENT,
        ("task_id", "not a valid id"),
    ),
    GrpcRow(
        "submit-id-too-long",
        submit("a" * (MAX_TASK_ID_LEN + 1)),
        CODE.INVALID_ARGUMENT,
        ("task_id", "not a valid id"),
    ),
    GrpcRow(
        "submit-priority-too-high",
        submit(tid("prio"), priority=PRIORITY_MAX + 1),
        CODE.INVALID_ARGUMENT,
        ("priority", "out of range"),
        tid("prio"),
    ),
    GrpcRow(
        "submit-priority-too-low",
        submit(tid("prio-low"), priority=-(2**31)),
        CODE.INVALID_ARGUMENT,
        ("priority", "out of range"),
        tid("prio-low"),
    ),
    GrpcRow(
        "submit-payload-json-not-json",
        submit(tid("pj"), {"type": "noop", "payload_json": "{nope"}),
        CODE.INVALID_ARGUMENT,
        ("payload.payload_json", "not valid JSON"),
        tid("pj"),
    ),
    GrpcRow(
        "submit-payload-json-not-an-object",
        submit(tid("pj2"), {"type": "noop", "payload_json": "3"}),
        CODE.INVALID_ARGUMENT,
        ("payload.payload_json", "must be a JSON object"),
        tid("pj2"),
    ),
    GrpcRow(
        "submit-payload-json-nan",
        submit(tid("pj3"), {"payload_json": '{"type": "noop", "x": NaN}'}),
        CODE.INVALID_ARGUMENT,
        ("payload.payload_json", "NaN"),
        tid("pj3"),
    ),
    GrpcRow(
        "submit-payload-too-deep",
        submit(tid("deep"), {"payload_json": DEEP}),
        CODE.INVALID_ARGUMENT,
        ("payload", "nested deeper than"),
        tid("deep"),
    ),
    GrpcRow(
        "submit-payload-type-not-a-string",
        submit(tid("ptype"), {"type": "3"}),
        CODE.INVALID_ARGUMENT,
        ("payload.type", "must be a string"),
        tid("ptype"),
    ),
    GrpcRow(
        "submit-gpu-slurm-untrusted",
        submit(tid("slurm"), cls="gpu_slurm"),
        CODE.PERMISSION_DENIED,
        ("task_class", "gpu_slurm tasks run commands", "token"),
        tid("slurm"),
    ),
    GrpcRow(
        "submit-undecodable-protobuf",
        raw_call(f"/{stubs.ORCHESTRATOR_SERVICE}/SubmitTask", b"\xff\xff\xff", 0),
        CODE.INVALID_ARGUMENT,
        ("request is not a valid orchestrator.v1.SubmitTaskRequest",),
    ),
    GrpcRow(
        "stream-logs-undecodable-protobuf",
        first_of_stream(
            lambda c: c.channels[1].unary_stream(
                f"/{stubs.ENV_MANAGER_SERVICE}/StreamLogs",
                request_serializer=None,
                response_deserializer=None,
            )(b"\xff\xff\xff", timeout=10)
        ),
        CODE.INVALID_ARGUMENT,
        ("request is not a valid env_manager.v1.StreamLogsRequest",),
    ),
    GrpcRow(
        "status-empty-id",
        lambda c: c.orch.GetTaskStatus(opb.GetTaskStatusRequest(), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("task_id", "is required"),
    ),
    GrpcRow(
        "status-unknown-id",
        lambda c: status_of(c, tid("never-submitted")),
        CODE.NOT_FOUND,
        ("unknown task", tid("never-submitted")),
    ),
    GrpcRow(
        "unknown-method",
        raw_call(f"/{stubs.ORCHESTRATOR_SERVICE}/NoSuchRpc", b"", 0),
        CODE.UNIMPLEMENTED,
        ("Method not found",),
    ),
    GrpcRow(
        "create-workflow-without-spec",
        lambda c: c.orch.CreateWorkflow(opb.CreateWorkflowRequest(id="w"), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("spec", "is required"),
    ),
    GrpcRow(
        "create-workflow-spec-not-json",
        lambda c: c.orch.CreateWorkflow(opb.CreateWorkflowRequest(spec=b"{nope"), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("spec", "not valid JSON"),
    ),
    GrpcRow(
        "start-run-of-an-unknown-workflow",
        lambda c: c.orch.StartWorkflowRun(
            opb.StartWorkflowRunRequest(workflow_id="wf-none"), timeout=10
        ),
        CODE.NOT_FOUND,
        ("workflow 'wf-none' not found",),
    ),
    GrpcRow(
        "stream-workflow-status-unknown-run",
        first_of_stream(
            lambda c: c.orch.StreamWorkflowStatus(
                opb.StreamWorkflowStatusRequest(run_id="r"), timeout=10
            )
        ),
        CODE.NOT_FOUND,
        ("workflow run 'r' not found",),
    ),
    GrpcRow(
        "stream-workflow-status-without-run-id",
        first_of_stream(
            lambda c: c.orch.StreamWorkflowStatus(opb.StreamWorkflowStatusRequest(), timeout=10)
        ),
        CODE.INVALID_ARGUMENT,
        ("run_id", "is required"),
    ),
    GrpcRow(
        "stream-logs-missing-service",
        first_of_stream(lambda c: c.env.StreamLogs(epb.StreamLogsRequest(), timeout=10)),
        CODE.INVALID_ARGUMENT,
        ("service_name", "is required"),
    ),
    GrpcRow(
        "stream-logs-unknown-service",
        first_of_stream(
            lambda c: c.env.StreamLogs(epb.StreamLogsRequest(service_name="ghost"), timeout=10)
        ),
        CODE.NOT_FOUND,
        ("service_name", "unknown service 'ghost'"),
    ),
    GrpcRow(
        "stream-health-unknown-service",
        first_of_stream(
            lambda c: c.env.StreamHealth(
                epb.StreamHealthRequest(service_names=["ghost"]), timeout=10
            )
        ),
        CODE.INVALID_ARGUMENT,
        ("service_names", "unknown service 'ghost'"),
    ),
    GrpcRow(
        "start-services-unknown-service",
        first_of_stream(
            lambda c: c.env.StartServices(
                epb.StartServicesRequest(service_names=["ghost"]), timeout=10
            )
        ),
        CODE.INVALID_ARGUMENT,
        ("service_names", "unknown service 'ghost'"),
    ),
    GrpcRow(
        "start-services-bad-override",
        first_of_stream(
            lambda c: c.env.StartServices(
                epb.StartServicesRequest(service_names=["kv"], overrides={"ghost.image": "x"}),
                timeout=10,
                metadata=(("authorization", f"Bearer {c.local_token()}"),),
            )
        ),
        CODE.INVALID_ARGUMENT,
        ("ghost.image", "unknown service 'ghost'"),
    ),
    GrpcRow(  # an override can change what a service runs (argv, image, volumes)
        "start-services-override-untrusted",
        first_of_stream(
            lambda c: c.env.StartServices(
                epb.StartServicesRequest(service_names=["kv"], overrides={"kv.argv": "[]"}),
                timeout=10,
            )
        ),
        CODE.PERMISSION_DENIED,
        ("overrides", "token"),
    ),
    GrpcRow(
        "stop-services-unknown-service",
        lambda c: c.env.StopServices(epb.StopServicesRequest(service_names=["ghost"]), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("service_names", "unknown service 'ghost'"),
    ),
    GrpcRow(
        "restart-service-missing-name",
        lambda c: c.env.RestartService(epb.RestartServiceRequest(), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("service_name", "is required"),
    ),
    GrpcRow(
        "restart-service-unknown",
        lambda c: c.env.RestartService(epb.RestartServiceRequest(service_name="ghost"), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("service_name", "unknown service 'ghost'"),
    ),
    GrpcRow(
        "services-status-unknown",
        lambda c: c.env.GetServicesStatus(
            epb.GetServicesStatusRequest(service_names=["kv", "ghost"]), timeout=10
        ),
        CODE.INVALID_ARGUMENT,
        ("service_names", "unknown service 'ghost'"),
    ),
    GrpcRow(
        "pull-images-bad-reference",
        first_of_stream(
            lambda c: c.env.PullImages(epb.PullImagesRequest(image_names=["not an image"]))
        ),
        CODE.INVALID_ARGUMENT,
        ("image_names", "not an image reference"),
    ),
    GrpcRow(
        "resource-availability-unknown-class",
        lambda c: c.env.GetResourceAvailability(
            epb.GetResourceAvailabilityRequest(workload_class="huge"), timeout=10
        ),
        CODE.INVALID_ARGUMENT,
        ("workload_class", "unknown class 'huge'"),
    ),
    GrpcRow(
        "execute-unknown-class",
        lambda c: c.env.ExecuteTask(
            epb.ExecuteTaskRequest(task_id=tid("exec-cls"), workload_class="huge"), timeout=10
        ),
        CODE.INVALID_ARGUMENT,
        ("workload_class", "unknown class 'huge'"),
        tid("exec-cls"),
    ),
    GrpcRow(
        "execute-negative-timeout",
        lambda c: c.env.ExecuteTask(
            epb.ExecuteTaskRequest(task_id=tid("exec-neg"), timeout_seconds=-5), timeout=10
        ),
        CODE.INVALID_ARGUMENT,
        ("timeout_seconds", ">= 0"),
        tid("exec-neg"),
    ),
    GrpcRow(
        "execute-invalid-task-id",
        lambda c: c.env.ExecuteTask(epb.ExecuteTaskRequest(task_id="no spaces"), timeout=10),
        CODE.INVALID_ARGUMENT,
        ("task_id", "not a valid id"),
    ),
    GrpcRow(
        "execute-gpu-slurm",
        lambda c: c.env.ExecuteTask(
            epb.ExecuteTaskRequest(task_id=tid("exec-slurm"), workload_class="gpu_slurm"),
            timeout=10,
        ),
        CODE.PERMISSION_DENIED,
        ("gpu_slurm tasks run commands", "token"),
        tid("exec-slurm"),
    ),
    GrpcRow(
        "grpc-health-unknown-service",
        lambda c: _health_check(c, "no.such.Service"),
        CODE.NOT_FOUND,
        (),  # grpc_health's servicer answers NOT_FOUND without a message
    ),
]


def _health_check(c: Clients, service: str) -> Any:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(c.channels[0])
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            r,
            id=r.id,
            marks=[pytest.mark.xfail(strict=True, raises=AssertionError, reason=r.bug)]
            if r.bug
            else [],
        )
        for r in GRPC_ROWS
    ],
)
def test_grpc_bad_input(clients: Clients, row: GrpcRow) -> None:
    with pytest.raises(grpc.RpcError) as e:
        row.call(clients)
    err = e.value
    details = err.details() or ""
    assert err.code() == row.code, (err.code(), details)
    for text in row.texts:
        assert text in details, (text, details)
    if row.not_queued:
        with pytest.raises(grpc.RpcError) as gone:
            status_of(clients, row.not_queued)
        assert gone.value.code() == CODE.NOT_FOUND


def test_duplicate_id_kept_the_first_spec(clients: Clients) -> None:
    """The ALREADY_EXISTS row changed nothing: the first submit's payload is what ran."""
    st = wait_done(clients, DUP_ID)
    # echo returns its payload without "type": {} is the first spec's, not {"x": "other"}
    assert (st.status, dict(st.result)) == ("completed", {})


# ----------------------------------------------------------------------------- HTTP table


@dataclass
class HttpRow:
    id: str
    body: bytes | Callable[[Clients], bytes]
    status: int
    err_field: str | None  # the JSON error's "field"
    texts: tuple[str, ...] = ()  # each must appear in the JSON error's "error"
    not_queued: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


HTTP_ROWS = [
    HttpRow("bad-json", b"{nope", 400, "body", ("invalid JSON",)),
    HttpRow("truncated-json", b'{"id": "x"', 400, "body", ("invalid JSON",)),
    HttpRow("not-utf8", b'{"id": "\xff"}', 400, "body", ("invalid JSON",)),
    HttpRow("body-is-a-list", j([{"id": "x"}]), 400, "body", ("must be a JSON object",)),
    HttpRow("body-is-a-string", j("x"), 400, "body", ("must be a JSON object",)),
    HttpRow("id-not-a-string", j({"id": 3}), 400, "id", ("must be a string",)),
    HttpRow(
        "id-invalid",
        j({"id": "has space"}),
        400,
        "task_id",
        ("not a valid id",),
        "has space",
    ),
    HttpRow("class-not-a-string", j({"class": 3}), 400, "class", ("must be a string",)),
    HttpRow(
        "class-unknown",
        j({"id": tid("h-cls"), "class": "nope"}),
        400,
        "task_class",
        ("unknown class 'nope'",),
        tid("h-cls"),
    ),
    HttpRow("payload-not-an-object", j({"payload": "x"}), 400, "payload", ("JSON object",)),
    HttpRow(
        "payload-type-not-a-string",
        j({"id": tid("h-ptype"), "payload": {"type": 3}}),
        400,
        "payload.type",
        ("must be a string",),
        tid("h-ptype"),
    ),
    HttpRow(
        "payload-over-the-limit",
        lambda c: j(
            {"id": tid("h-big"), "payload": {"type": "noop", "b": "x" * (c.payload_limit + 1)}}
        ),
        400,
        "payload",
        ("exceeds the limit of",),
        tid("h-big"),
    ),
    HttpRow("priority-a-string", j({"priority": "high"}), 400, "priority", ("integer",)),
    HttpRow("priority-a-bool", j({"priority": True}), 400, "priority", ("integer",)),
    HttpRow("priority-a-float", j({"priority": 1.5}), 400, "priority", ("integer",)),
    HttpRow(
        "priority-out-of-range",
        j({"id": tid("h-prio"), "priority": PRIORITY_MAX + 1}),
        400,
        "priority",
        ("out of range",),
        tid("h-prio"),
    ),
    HttpRow(
        "timeout-a-string",
        j({"timeout_seconds": "soon"}),
        400,
        "timeout_seconds",
        ("seconds",),
    ),
    HttpRow("workflow-id-a-number", j({"workflow_id": 7}), 400, "workflow_id", ("string",)),
    HttpRow(
        "duplicate-id-other-payload",
        j({"id": DUP_ID, "payload": {"type": "echo", "x": "other"}}),
        409,
        "task_id",
        ("already exists",),
    ),
    HttpRow(
        "gpu-slurm-untrusted",
        j({"id": tid("h-slurm"), "class": "gpu_slurm"}),
        403,
        "task_class",
        ("gpu_slurm tasks run commands", "token"),
        tid("h-slurm"),
    ),
]


@pytest.mark.parametrize("row", HTTP_ROWS, ids=[r.id for r in HTTP_ROWS])
def test_http_submit_bad_input(clients: Clients, row: HttpRow) -> None:
    body = row.body(clients) if callable(row.body) else row.body
    with clients.http() as c:
        r = c.post("/queue/submit", content=body, headers=row.headers)
        assert r.status_code == row.status, r.text
        err = r.json()
        assert err.get("field") == row.err_field, err
        for text in row.texts:
            assert text in err["error"], (text, err)
        if row.not_queued:
            assert c.get(f"/tasks/{row.not_queued}").status_code == 404


@pytest.mark.parametrize("value", ["-1", "0", "NaN", "Infinity", "-Infinity", "1e999", "true"])
def test_http_bad_timeout_names_the_body_field(clients: Clients, value: str) -> None:
    """The body key is ``timeout_seconds`` and the error names it (not the internal
    ``timeout_s``); Python's JSON reads ``NaN``/``Infinity`` literals, so they arrive too."""
    task_id = tid(f"h-timeout-{value.replace('-', 'minus')}")
    body = f'{{"id": "{task_id}", "payload": {{"type": "noop"}}, "timeout_seconds": {value}}}'
    with clients.http() as c:
        r = c.post("/queue/submit", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "timeout_seconds", r.text
        assert "seconds > 0" in r.json()["error"]
        assert c.get(f"/tasks/{task_id}").status_code == 404


def test_http_timeout_seconds_is_accepted(clients: Clients) -> None:
    task_id = tid("h-timeout-ok")
    with clients.http() as c:
        r = c.post(
            "/queue/submit",
            json={"id": task_id, "payload": {"type": "noop"}, "timeout_seconds": 2.5},
        )
    assert r.status_code == 200 and r.json()["id"] == task_id, r.text
    assert wait_done(clients, task_id).status == "completed"


def test_http_body_over_max_request_bytes_is_413(clients: Clients) -> None:
    task_id = tid("h-huge-body")
    body = j({"id": task_id, "payload": {"type": "noop"}, "junk": "x" * clients.max_request})
    with clients.http() as c:
        r = c.post("/queue/submit", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["field"] == "body", r.text
        assert f"limit of {clients.max_request} bytes" in r.json()["error"]
        assert c.get(f"/tasks/{task_id}").status_code == 404
        # the connection is still usable: the server drained the rest of the body
        assert c.get("/queue/status").status_code == 200


def test_http_chunked_body_over_max_request_bytes_is_413(clients: Clients) -> None:
    """No Content-Length (chunked transfer): the cap applies while the body streams in."""
    task_id = tid("h-huge-chunked")
    head = j({"id": task_id, "payload": {"type": "noop"}, "junk": ""})[:-2]  # up to the '"'
    chunk = b"x" * 65536
    chunks = clients.max_request // len(chunk) + 1

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(chunks):
            yield chunk
        yield b'"}'

    with clients.http() as c:
        r = c.post("/queue/submit", content=body(), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert r.status_code == 413, r.text
        assert r.json()["field"] == "body", r.text
        assert f"limit of {clients.max_request} bytes" in r.json()["error"]
        assert c.get(f"/tasks/{task_id}").status_code == 404
    # just under the cap, chunked, is read whole and accepted
    ok_id = tid("h-chunked-ok")
    small = j({"id": ok_id, "payload": {"type": "noop"}})
    with clients.http() as c:
        r = c.post(
            "/queue/submit",
            content=iter([small[:5], small[5:]]),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 200 and r.json()["id"] == ok_id, r.text


def test_http_other_bad_requests(clients: Clients) -> None:
    with clients.http() as c:
        r = c.get(f"/tasks/{tid('h-never')}")
        assert r.status_code == 404
        assert r.json()["field"] == "task_id" and tid("h-never") in r.json()["error"]
        r = c.get("/slurm/status/anything")
        assert r.status_code == 404 and r.json()["field"] == "task_id"
        assert c.get("/queue/submit").status_code == 405  # wrong method
        assert c.put("/queue/status").status_code == 405
        assert c.get("/no/such/route").status_code == 404
        r = c.post("/workflows", json={"id": "w"})  # no name, no nodes
        assert r.status_code == 400 and r.json()["field"] == "name", r.text
        r = c.post("/workflows", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body"
        r = c.post("/workflows/wf-none/runs", json={"input": [1]})
        assert r.status_code == 400 and r.json()["field"] == "input"
        assert c.get("/workflow-runs/run-none").json()["field"] == "run_id"


# ----------------------------------------------------------------------------- mid-stream


def _kv_status(c: Clients) -> str:
    try:
        st = c.env.GetServicesStatus(epb.GetServicesStatusRequest(service_names=["kv"]), timeout=5)
    except grpc.RpcError:
        return "registry unavailable"
    return str(st.services["kv"].status)


def test_stream_logs_broken_after_it_opened_keeps_a_precise_code(clients: Clients) -> None:
    """A log stream that breaks while following (here: the service registry is killed and Ray
    restarts it) ends with UNAVAILABLE, the code that says "open it again": not UNKNOWN."""
    ups = list(
        clients.env.StartServices(epb.StartServicesRequest(service_names=["kv"]), timeout=60)
    )
    assert [(u.service_name, u.status) for u in ups if u.progress == 100] == [("kv", "healthy")]
    reg = ray.get_actor("service_registry", namespace=NAMESPACE)
    pid_before = ray.get(reg.ping.remote(), timeout=10)["pid"]
    stream = clients.env.StreamLogs(
        epb.StreamLogsRequest(service_name="kv", follow=True, tail=1), timeout=120
    )
    try:
        assert next(stream).service_name == "kv"  # open: redis logged at least its banner
        ray.kill(reg, no_restart=False)  # Ray restarts it (max_restarts=-1)
        with pytest.raises(grpc.RpcError) as e:
            for _ in stream:  # the registry lost the stream: nothing more can arrive
                pass
        details = e.value.details() or ""
        assert e.value.code() == CODE.UNAVAILABLE, (e.value.code(), details)
        assert "service_registry" in details or "log stream of 'kv' was lost" in details, details
    finally:
        stream.cancel()
        deadline = time.monotonic() + 60  # back, with kv adopted, before anything else runs
        while time.monotonic() < deadline and _kv_status(clients) != "running":
            time.sleep(0.2)
    assert ray.get(reg.ping.remote(), timeout=10)["pid"] != pid_before
    assert _kv_status(clients) == "running"
    clients.env.StopServices(epb.StopServicesRequest(service_names=["kv"]), timeout=30)


# ----------------------------------------------------------------------------- nothing lost


def test_the_task_accepted_before_the_bad_input_completes(clients: Clients) -> None:
    st = wait_done(clients, GOOD_ID)
    assert (st.status, st.error) == ("completed", "")
    assert json.loads(st.result["slept"]) == 2

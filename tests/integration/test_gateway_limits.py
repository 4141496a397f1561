"""Per-client limits of the gateway over real loopback gRPC and HTTP (rayinfra.api.limits).

A runtime of this module's own with small limits: a client may start 0.5 requests a second in
bursts of 4 and have 2 in flight. One budget per client across the four servers; the client is
the caller's host (127.0.0.1 here) unless it presents a valid token (then ``token:local``). Over
a limit: gRPC RESOURCE_EXHAUSTED (with a ``retry-after`` trailer) and HTTP 429 with
``Retry-After``, each naming the limit's config key; a refused request does nothing and what was
accepted before is not lost.

The rate limit is checked loosely on purpose: on a busy machine calls can be slow enough for a
bucket to refill a little between them, so each test asserts "refused within a few calls more
than the burst", never an exact count or a time.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from rayinfra.api import stubs
from tests.support.polling import wait_until
from tests.support.runtime_cli import CliRuntime, cli_runtime

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()
RATE, BURST, INFLIGHT = 0.5, 4, 2
FULL_BUCKET_S = BURST / RATE + 0.5
POLL_S = 1 / RATE + 0.5  # a test polling its runtime stays under the rate limit
LIMITS = (
    f"client_rate_per_s = {RATE}\nclient_rate_burst = {BURST}\nclient_max_inflight = {INFLIGHT}"
)
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def limited() -> Iterator[CliRuntime]:
    with cli_runtime("rlim", LIMITS) as rt:
        yield rt


@pytest.fixture
def fresh(limited: CliRuntime) -> CliRuntime:
    """Every client's bucket full again (idle for burst / rate seconds)."""
    time.sleep(FULL_BUCKET_S)
    return limited


def bearer(rt: CliRuntime) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {rt.token()}"),)


def code_of(fn: Callable[[], Any]) -> tuple[str, str, dict[str, str]]:
    try:
        fn()
        return "OK", "", {}
    except grpc.RpcError as e:
        trailers = {k: v for k, v in (e.trailing_metadata() or ())}  # type: ignore[attr-defined]
        return e.code().name, e.details() or "", trailers


def exhaust(call: Callable[[], Any]) -> tuple[int, str, dict[str, str]]:
    """Call until refused; (calls that passed, the refusal's details, its trailers)."""
    for passed in range(BURST + 6):
        code, details, trailers = code_of(call)
        if code != "OK":
            assert code == "RESOURCE_EXHAUSTED", (code, details)
            return passed, details, trailers
    raise AssertionError(f"{BURST + 6} calls in a row passed a burst of {BURST}")


def test_rate_limit_is_one_budget_per_client_across_the_four_servers(fresh: CliRuntime) -> None:
    rt = fresh
    with (
        grpc.insecure_channel(rt.addr("orchestrator_grpc_addr")) as och,
        grpc.insecure_channel(rt.addr("env_manager_grpc_addr")) as ech,
    ):
        orch = opb_grpc.OrchestratorServiceStub(och)
        env = epb_grpc.EnvManagerServiceStub(ech)
        passed, details, trailers = exhaust(lambda: orch.Health(opb.HealthRequest(), timeout=10))
        assert BURST <= passed <= BURST + 2, passed
        assert "gateway.client_rate_per_s" in details and "client 127.0.0.1" in details, details
        assert int(trailers["retry-after"]) >= 1
        # the same client on the other gRPC service and on both HTTP apps: refused too
        code, details, _ = code_of(
            lambda: env.GetServicesStatus(epb.GetServicesStatusRequest(), timeout=10)
        )
        assert code == "RESOURCE_EXHAUSTED" and "gateway.client_rate_per_s" in details
        for key in ("orchestrator_http_addr", "env_manager_http_addr"):
            r = httpx.get(f"http://{rt.addr(key)}/health", timeout=10)
            assert r.status_code == 429, (key, r.text)
            assert int(r.headers["retry-after"]) >= 1
            assert "gateway.client_rate_per_s" in r.json()["error"]
        # a caller presenting a valid token is another client: its own budget
        health = orch.Health(opb.HealthRequest(), metadata=bearer(rt), timeout=10)
        assert health.healthy
        # a wrong token does not buy a fresh budget: it counts for the host
        code, _, _ = code_of(
            lambda: orch.Health(
                opb.HealthRequest(), metadata=(("authorization", "Bearer guess"),), timeout=10
            )
        )
        assert code == "RESOURCE_EXHAUSTED"
        # the bucket refills at its rate: served again
        wait_until(
            "the host's bucket to refill",
            lambda: code_of(lambda: orch.Health(opb.HealthRequest(), timeout=10))[0] == "OK",
            timeout=4 / RATE,
            step=0.5,
        )


def test_inflight_limit_counts_open_streams(fresh: CliRuntime) -> None:
    rt = fresh
    md = bearer(rt)  # as token:local (a budget no other test of this module spends much of)
    with grpc.insecure_channel(rt.addr("orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)

        # each replays the events table from the start: its first event shows it was admitted
        # (a probe sent before that could pass and spend a rate token)
        streams = [
            stub.StreamEvents(opb.StreamEventsRequest(since_timestamp=1), metadata=md, timeout=60)
            for _ in range(INFLIGHT)
        ]
        try:
            for s in streams:
                assert next(s).event_type
            # both are open (served, following); a third request of this client is refused
            code, details, _ = code_of(
                lambda: stub.Health(opb.HealthRequest(), metadata=md, timeout=10)
            )
            assert code == "RESOURCE_EXHAUSTED", (code, details)
            assert "gateway.client_max_inflight" in details, details
            # another client is not affected
            assert stub.Health(opb.HealthRequest(), timeout=10).version
        finally:
            streams[0].cancel()
        # a stream that closes releases its slot
        wait_until(
            "a slot after a stream closed",
            lambda: (
                code_of(lambda: stub.Health(opb.HealthRequest(), metadata=md, timeout=10))[0]
                == "OK"
            ),
            timeout=10,
            step=0.2,
        )
        for s in streams[1:]:
            s.cancel()


class HeldSubmit:
    """A POST /queue/submit whose chunked body is only half sent: in flight until finished.

    It asks ``expect: 100-continue`` and sends its first chunk only once the server answered
    ``100 Continue``, which the server does when the route starts reading the body: by then the
    request has been admitted under the client's limits."""

    def __init__(self, rt: CliRuntime, task_id: str) -> None:
        host, _, port = rt.addr("orchestrator_http_addr").rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        body = json.dumps({"id": task_id, "payload": {"type": "noop"}}).encode()
        self.rest = body[5:]
        self.sock.sendall(
            b"POST /queue/submit HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"expect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = self.sock.recv(1)
            assert chunk, f"the server closed the connection: {interim!r}"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        self.sock.sendall(b"5\r\n" + body[:5] + b"\r\n")

    def finish(self) -> tuple[int, dict[str, Any]]:
        """Send the rest of the body; the response's status and JSON body."""
        self.sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(self.rest), self.rest))
        data = b""
        while True:
            head, _, body = data.partition(b"\r\n\r\n")
            if _ and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), json.loads(body)


def test_http_inflight_counts_a_request_still_sending_its_body(fresh: CliRuntime) -> None:
    """Two submits still streaming their bodies hold both slots: a third request is 429 naming
    gateway.client_max_inflight; the two finish and their tasks run (nothing accepted is lost)."""
    rt = fresh
    ids = [f"lim-{RUN}-held-{i}" for i in range(INFLIGHT)]
    held = [HeldSubmit(rt, t) for t in ids]
    base = f"http://{rt.addr('orchestrator_http_addr')}"
    try:
        r = httpx.get(f"{base}/queue/status", timeout=10)
        assert r.status_code == 429, r.text
        assert "gateway.client_max_inflight" in r.json()["error"], r.text
        assert int(r.headers["retry-after"]) >= 1
    finally:
        answers = [h.finish() for h in held]
    assert [(status, body.get("id")) for status, body in answers] == [(200, t) for t in ids]
    with grpc.insecure_channel(rt.addr("orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)

        def done() -> bool:
            reply = stub.GetTasks(opb.GetTasksRequest(task_ids=ids), metadata=bearer(rt))
            return [t.status for t in reply.tasks] == ["completed"] * len(ids)

        wait_until("the held submits' tasks to complete", done, timeout=60, step=POLL_S)


def test_a_refused_submit_queues_nothing(fresh: CliRuntime) -> None:
    rt = fresh
    accepted = f"lim-{RUN}-accepted"
    refused = f"lim-{RUN}-refused"
    with grpc.insecure_channel(rt.addr("orchestrator_grpc_addr")) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        ok = stub.SubmitTask(opb.SubmitTaskRequest(id=accepted, payload={"type": "noop"}))
        assert ok.success
        exhaust(lambda: stub.Health(opb.HealthRequest(), timeout=10))
        code, details, _ = code_of(
            lambda: stub.SubmitTask(
                opb.SubmitTaskRequest(id=refused, payload={"type": "noop"}), timeout=10
            )
        )
        assert code == "RESOURCE_EXHAUSTED", (code, details)
        md = bearer(rt)  # look with another client's budget
        code, _, _ = code_of(
            lambda: stub.GetTaskStatus(
                opb.GetTaskStatusRequest(task_id=refused), metadata=md, timeout=10
            )
        )
        assert code == "NOT_FOUND"

        def completed() -> bool:
            st = stub.GetTaskStatus(
                opb.GetTaskStatusRequest(task_id=accepted), metadata=md, timeout=10
            )
            return st.status == "completed"

        wait_until("the task accepted before the limit", completed, timeout=60, step=POLL_S)

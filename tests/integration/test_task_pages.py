"""Paginated task listing against the session runtime, through every surface: the Python client
over both transports (actor handles and the gateway's gRPC), raw gRPC ``ListTasks`` (its new
``after``/``next`` fields, and a request without them as before), HTTP ``GET /tasks``. Each walks
pages from the newest task until it has met the tasks it submitted: they come newest first, each
exactly once, and no task shows up on two pages."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from rayinfra import ActorTransport, AgentInfraSync, GrpcTransport
from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.config import dial_addr
from rayinfra.errors import InvalidArgumentError
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()
PAGE = 4
MAX_PAGES = 200  # the walk stops here: the session runtime's other tasks are fewer than that


def submit_mine(infra: AgentInfraSync, n: int = 10) -> list[str]:
    """``n`` tasks, two batches (two submit times, ties inside each): newest first they are
    the second batch, then the first, each by id descending."""
    run = uuid.uuid4().hex[:8]
    ids = [f"pg-{run}-{i:02d}" for i in range(n)]
    for half in (ids[: n // 2], ids[n // 2 :]):
        infra.submit_tasks([{"task_id": t, "payload": {"type": "noop"}} for t in half])
    infra.wait_tasks(ids, timeout=60)
    return ids


def walk(fetch: Callable[[str | None], tuple[list[str], str | None]], mine: list[str]) -> list[str]:
    """Follow ``next`` from the newest page until every id of ``mine`` was seen; the ids of
    ``mine`` in the order met. Fails on a task seen twice or a page over the limit."""
    seen: set[str] = set()
    met: list[str] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        ids, after = fetch(after)
        assert len(ids) <= PAGE
        assert not seen & set(ids), "a task on two pages"
        seen.update(ids)
        met += [t for t in ids if t in mine]
        if set(met) == set(mine) or after is None:
            break
    return met


def newest_first(ids: list[str]) -> list[str]:
    half = len(ids) // 2
    return sorted(ids[half:], reverse=True) + sorted(ids[:half], reverse=True)


@pytest.fixture(scope="module", params=["actors", "grpc"])
def infra(request: pytest.FixtureRequest, rt: Runtime) -> Iterator[AgentInfraSync]:
    if request.param == "actors":
        transport: Any = ActorTransport(retry_for_s=30.0)
    else:
        token = token_path(rt.config).read_text().strip()
        transport = GrpcTransport(dial_addr(rt.config.gateway.orchestrator_grpc_addr), token=token)
    client = AgentInfraSync(transport=transport).start()
    assert client._infra.transport.kind == request.param
    try:
        yield client
    finally:
        client.stop()


def test_client_pages_over_either_transport(infra: AgentInfraSync) -> None:
    mine = submit_mine(infra)

    def fetch(after: str | None) -> tuple[list[str], str | None]:
        page = infra.list_tasks_page(limit=PAGE, after=after)
        assert set(page) == {"tasks", "next"}
        return [t["task_id"] for t in page["tasks"]], page["next"]

    assert walk(fetch, mine) == newest_first(mine)

    def completed(after: str | None) -> tuple[list[str], str | None]:
        page = infra.list_tasks_page("completed", None, PAGE, after)
        assert all(t["status"] == "completed" for t in page["tasks"])
        return [t["task_id"] for t in page["tasks"]], page["next"]

    assert walk(completed, mine) == newest_first(mine)
    # list_tasks as before (no cursor): a list; with after: the page after it
    first = infra.list_tasks(limit=PAGE)
    assert isinstance(first, list) and len(first) == PAGE
    cursor = infra.list_tasks_page(limit=PAGE)["next"]
    assert cursor is not None
    second = infra.list_tasks(limit=PAGE, after=cursor)
    assert not {t["task_id"] for t in first} & {t["task_id"] for t in second}
    with pytest.raises(InvalidArgumentError) as e:
        infra.list_tasks(after="not a cursor")
    assert e.value.field == "after"


def test_last_page_has_no_cursor(infra: AgentInfraSync) -> None:
    page = infra.list_tasks_page(task_class="no-such-class", limit=PAGE)
    assert page == {"tasks": [], "next": None}


@pytest.fixture(scope="module")
def channel(rt: Runtime) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(dial_addr(rt.config.gateway.orchestrator_grpc_addr)) as ch:
        yield ch


def test_grpc_list_tasks_pages(rt: Runtime, channel: grpc.Channel) -> None:
    stub = opb_grpc.OrchestratorServiceStub(channel)
    with AgentInfraSync(transport=ActorTransport(retry_for_s=30.0)) as infra:
        mine = submit_mine(infra)

    def fetch(after: str | None) -> tuple[list[str], str | None]:
        res = stub.ListTasks(opb.ListTasksRequest(limit=PAGE, after=after or ""))
        return [t.task_id for t in res.tasks], res.next or None

    assert walk(fetch, mine) == newest_first(mine)
    # a request without the new field, as an older client sends it: the newest page, as before
    old = stub.ListTasks(opb.ListTasksRequest(limit=PAGE))
    assert len(old.tasks) == PAGE and old.next
    with pytest.raises(grpc.RpcError) as e:
        stub.ListTasks(opb.ListTasksRequest(limit=PAGE, after="nan:x"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "after" in e.value.details()


def test_http_list_tasks_pages(rt: Runtime) -> None:
    base = f"http://{dial_addr(rt.config.gateway.orchestrator_http_addr)}"
    with AgentInfraSync(transport=ActorTransport(retry_for_s=30.0)) as infra:
        mine = submit_mine(infra)
    with httpx.Client(base_url=base, timeout=30) as http:

        def fetch(after: str | None) -> tuple[list[str], str | None]:
            params = {"limit": PAGE, **({"after": after} if after else {})}
            r = http.get("/tasks", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert all(t["status"] and "submitted_at" in t for t in body["items"])
            return [t["task_id"] for t in body["items"]], body["next"]

        assert walk(fetch, mine) == newest_first(mine)
        r = http.get("/tasks", params={"status": "completed", "limit": 1})
        assert r.status_code == 200 and r.json()["items"][0]["status"] == "completed"
        for params, field in (
            ({"limit": 0}, "limit"),
            ({"limit": "x"}, "limit"),
            ({"status": "sleeping"}, "status"),
            ({"after": "garbage"}, "after"),
        ):
            r = http.get("/tasks", params=params)
            assert r.status_code == 400 and r.json()["field"] == field, (params, r.text)

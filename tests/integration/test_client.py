"""The Python client's pinned surface, one suite run over both transports against the session
runtime: ``AgentInfra(transport=ActorTransport())`` (Ray actor handles) and
``AgentInfra(transport=GrpcTransport(addr, token=...))`` (the gateway over loopback). Both must
give the same dicts, the same errors and the same waits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from rayinfra import ActorTransport, AgentInfraSync, GrpcTransport
from rayinfra.config import dial_addr
from rayinfra.errors import InvalidArgumentError, TaskConflictError, TaskNotFoundError
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", params=["actors", "grpc"])
def infra(request: pytest.FixtureRequest, rt: Runtime) -> Iterator[AgentInfraSync]:
    if request.param == "actors":
        transport = ActorTransport(retry_for_s=30.0)
    else:
        token = rt.config.gateway_token_path.read_text().strip()
        transport = GrpcTransport(dial_addr(rt.config.gateway.orchestrator_grpc_addr), token=token)
    client = AgentInfraSync(transport=transport).start()
    assert client._infra.transport.kind == request.param
    try:
        yield client
    finally:
        client.stop()


def test_same_results_over_either_transport(infra: AgentInfraSync) -> None:
    payload = {"type": "echo", "n": 1, "s": "1", "t": "true", "nested": {"a": [1, None, 2.5]}}
    tid = uid("c-echo")
    assert infra.submit_task(task_id=tid, payload=payload, priority=3) == {
        "success": True,
        "task_id": tid,
        "error": "",
    }
    st = infra.wait_task(tid, timeout=30)
    # native types survive the string map: "1" stays a string, 1 an int
    assert st["result_payload"] == {k: v for k, v in payload.items() if k != "type"}
    assert st["result"] == {"n": "1", "s": "1", "t": "true", "nested": '{"a":[1,null,2.5]}'}
    assert st["status"] == "completed" and st["attempts"] == 1 and st["completed_at"] > 0
    again = infra.get_task_status(tid)
    assert {k: again[k] for k in ("task_id", "status", "result", "result_payload", "error")} == {
        k: st[k] for k in ("task_id", "status", "result", "result_payload", "error")
    }


def test_a_waiters_first_read_leaves_out_what_has_not_finished(infra: AgentInfraSync) -> None:
    """``wait_tasks`` first reads what already finished (``get(..., finished_only=True)``):
    a finished task is there, an unknown id is ``None``, a running one is left out (its end
    comes by the feed); without the flag every id has its status."""
    done, running, unknown = uid("c-done"), uid("c-running"), uid("c-unknown")
    infra.submit_tasks(
        [
            {"task_id": done, "payload": {"type": "noop"}},
            {"task_id": running, "payload": {"type": "sleep", "seconds": 30}},
        ]
    )
    infra.wait_task(done, timeout=30)
    transport = infra._infra.transport
    try:
        finished = infra._run(transport.get([done, running, unknown], True))
        assert set(finished) == {done, unknown} and finished[unknown] is None
        st = finished[done]
        assert st is not None and st.status == "completed"
        every = infra._run(transport.get([done, running, unknown]))
        assert list(every) == [done, running, unknown] and every[unknown] is None
        st = every[running]
        assert st is not None and st.status in ("pending", "running")
    finally:
        infra.cancel_task(running)


def test_batch_submit_and_wait(infra: AgentInfraSync) -> None:
    batch = uid("c-batch")
    tasks = [
        {"task_id": f"{batch}-{i}", "payload": {"type": "echo", "i": i}, "priority": i % 5}
        for i in range(300)
    ]
    res = infra.submit_tasks(tasks)
    assert [r["task_id"] for r in res] == [t["task_id"] for t in tasks]
    done = infra.wait_tasks([t["task_id"] for t in tasks], timeout=120)
    assert [d["result_payload"]["i"] for d in done] == list(range(300))
    # a repeat of the same batch is idempotent: nothing runs twice
    infra.submit_tasks(tasks)
    assert all(infra.get_task_status(t["task_id"])["attempts"] == 1 for t in tasks[:20])


def test_generated_ids_and_sync_wait(infra: AgentInfraSync) -> None:
    r = infra.submit_task(payload={"type": "noop"})
    assert r["success"] and len(r["task_id"]) == 32
    assert infra.wait_task(r["task_id"], timeout=30)["status"] == "completed"


def test_shell_runs_with_the_local_token_sent_automatically(infra: AgentInfraSync) -> None:
    tid = uid("c-shell")
    infra.submit_task(task_id=tid, payload={"type": "shell", "argv": ["echo", "$HOME;id"]})
    st = infra.wait_task(tid, timeout=30)
    assert st["result_payload"]["stdout"] == "$HOME;id\n"  # argv runs literally


def test_cancel_list_purge(infra: AgentInfraSync) -> None:
    tid = uid("c-cancel")
    infra.submit_task(task_id=tid, payload={"type": "sleep", "seconds": 60})
    assert infra.cancel_task(tid) == {"task_id": tid, "status": "cancelled", "cancelled": True}
    assert infra.wait_task(tid, timeout=30)["status"] == "cancelled"
    assert infra.cancel_task(tid)["cancelled"] is False
    listed = infra.list_tasks(status="cancelled", limit=1000)
    assert tid in {t["task_id"] for t in listed}
    assert all(t["status"] == "cancelled" for t in listed)
    with pytest.raises(InvalidArgumentError) as e:
        infra.list_tasks(status="sleeping")
    assert e.value.field == "status"
    purged = infra.purge_tasks(older_than_s=10 * 365 * 86400.0)  # nothing is that old
    assert purged and all(v == 0 for v in purged.values())


def test_streams_end_when_named_tasks_finish(infra: AgentInfraSync) -> None:
    since = int(time.time())
    ids = [uid("c-stream") for _ in range(3)]
    infra.submit_tasks([{"task_id": t, "payload": {"type": "sleep", "seconds": 0.2}} for t in ids])
    seen = list(infra.stream_task_results(ids))
    finals = {s["task_id"]: s for s in seen if s["status"] == "completed"}
    assert set(finals) == set(ids)
    assert all(s["status"] in ("pending", "running", "completed") for s in seen)
    events = []
    for ev in infra.stream_events(["task_submitted", "task_completed"], since):
        if ev["resource_id"] in ids:
            events.append(ev)
        if sum(e["event_type"] == "task_completed" for e in events) == 3:
            break
    assert {e["event_type"] for e in events} == {"task_submitted", "task_completed"}
    completed = next(e for e in events if e["event_type"] == "task_completed")
    assert isinstance(completed["data"]["attempts"], int)  # native JSON, not a string map
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})  # the log's order
    # a resume after the first of them: the rest, each once, in the same order
    resumed = []
    for ev in infra.stream_events(["task_submitted", "task_completed"], after_seq=events[0]["seq"]):
        if ev["resource_id"] in ids:
            resumed.append(ev)
        if len(resumed) == len(events) - 1:
            break
    assert resumed == events[1:]


def test_errors_are_the_same_types(infra: AgentInfraSync) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        infra.submit_task(task_id=uid("c-bad"), payload={}, task_class="quantum")
    assert e.value.field == "task_class" and "valid:" in e.value.message
    with pytest.raises(InvalidArgumentError) as e:
        infra.submit_task(task_id=uid("c-bad"), payload={}, timeout_s=0)
    assert e.value.field == "timeout_s"
    with pytest.raises(InvalidArgumentError) as e:
        infra.submit_tasks([{"task_id": uid("ok"), "payload": {}}, {"payload": [1]}])
    assert e.value.field == "tasks[1].payload"
    with pytest.raises(InvalidArgumentError) as e:
        infra.submit_task(task_id=5, payload={})  # type: ignore[arc-type]
    assert e.value.field == "task_id"
    assert infra.submit_tasks([]) == []
    tid = uid("c-dup")
    infra.submit_task(task_id=tid, payload={"type": "noop", "v": 1})
    with pytest.raises(TaskConflictError) as c:
        infra.submit_task(task_id=tid, payload={"type": "noop", "v": 2})
    assert c.value.field == "task_id"
    with pytest.raises(TaskNotFoundError):
        infra.get_task_status(uid("never"))
    with pytest.raises(TaskNotFoundError):
        infra.wait_task(uid("never"), timeout=5)
    with pytest.raises(TimeoutError):
        slow = uid("c-slow")
        infra.submit_task(task_id=slow, payload={"type": "sleep", "seconds": 30})
        infra.wait_task(slow, timeout=0.5)
    infra.cancel_task(slow)


def test_metrics_and_health(infra: AgentInfraSync) -> None:
    m = infra.get_metrics()
    assert m["queue_tasks_submitted_total"] > 0 and "orchestrator_concurrency_limit" in str(m)
    h = infra.health_check()
    assert h["services"]["scheduler"] == "healthy" and h["services"]["gateway"] == "healthy"
    assert set(h) == {"healthy", "version", "services"}

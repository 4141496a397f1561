"""The task rows and events the scheduler and the gateway write (``taskstore.apply_transitions``),
on a real state store: what each event's data holds, and that a finished task's result is the
same JSON in its row and in its event (encoded once, spliced into the event)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayinfra import taskstore
from rayinfra.models import TaskStatus
from rayinfra.scheduling.tasks import TASK_STATES, TaskSpec
from rayinfra.store import StateStore
from rayinfra.taskstore import TaskRow, Transition

RESULTS: list[Any] = [
    None,
    {"ok": True},
    {"text": 'é ✓ \u2028 "quoted" \\ }', "nested": [1, 2.5, {"deep": [None, False]}]},
    [],
    "plain",
    0,
]


def _row(task_id: str, **kw: Any) -> TaskRow:
    spec = TaskSpec(task_id=task_id, task_class="cpu_short", payload={"type": "noop"}, priority=3)
    return TaskRow(spec=spec, identity="id-" + task_id, trusted=True, status="pending", **kw)


def _events(s: StateStore) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in s.events(after_seq=0, limit=1000):
        out.setdefault(e.resource_id, []).append({"type": e.event_type, **e.data})
    return out


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_a_finished_tasks_event_carries_what_its_row_holds(tmp_path: Path, result: Any) -> None:
    with StateStore(tmp_path / "state.db") as s:
        row = _row("t1", submitted_at=100.0)
        s.write(
            lambda c: taskstore.apply_transitions(
                c, [Transition(row, "task_submitted")], 100, insert=True
            )
        )
        row.status, row.attempts, row.result, row.error = "completed", 1, result, ""
        row.started_at, row.finished_at = 101.25, 102.5
        done = Transition(row, "task_completed", {"attempts": 1, "duration_ms": 1250.0})
        last = s.write(lambda c: taskstore.apply_transitions(c, [done], 103))

        events = _events(s)["t1"]
        assert [e["type"] for e in events] == ["task_submitted", "task_completed"]
        assert events[0] == {
            "type": "task_submitted", "class": "cpu_short", "priority": 3, "status": "pending",
            "attempts": 0,
        }  # fmt: skip
        assert events[1] == {
            "type": "task_completed", "class": "cpu_short", "priority": 3, "status": "completed",
            "attempts": 1, "result": result, "error": "", "started_at": 101.25,
            "finished_at": 102.5, "duration_ms": 1250.0,
        }  # fmt: skip
        stored = s.read(lambda c: taskstore.get_tasks(c, ["t1"]))["t1"]
        assert (stored.status, stored.result, stored.finished_at) == ("completed", result, 102.5)
        # the same text in the row and in the event: encoded once
        row_json, data_json = s.read(
            lambda c: c.execute(
                "SELECT t.result, e.data FROM tasks t JOIN events e ON e.resource_id = t.id"
                " WHERE e.seq = ?",
                (last,),
            ).fetchone()
        )
        if result is None:
            assert row_json is None and '"result":null' in data_json
        else:
            assert f'"result":{row_json}' in data_json and json.loads(row_json) == result


def test_events_of_tasks_that_have_not_ended_carry_no_result(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as s:
        row = _row("t2", submitted_at=100.0)
        s.write(lambda c: taskstore.apply_transitions(c, [Transition(row, "task_submitted", {"workflow_id": "wf"})], 100, insert=True))  # fmt: skip
        row.status, row.attempts, row.started_at = "running", 1, 101.0
        started = Transition(row, "task_started", {"attempt": 1})
        s.write(lambda c: taskstore.apply_transitions(c, [started], 101, update_rows=False))
        row.status, row.error, row.result = "pending", "boom", {"partial": 1}
        retry = Transition(row, "task_retrying", {"error": "boom", "attempt": 1, "backoff_s": 0.5})
        s.write(lambda c: taskstore.apply_transitions(c, [retry], 102))

        events = _events(s)["t2"]
        assert events[0]["workflow_id"] == "wf" and "result" not in events[0]
        assert events[1] == {
            "type": "task_started", "class": "cpu_short", "priority": 3, "status": "running",
            "attempts": 1, "attempt": 1,
        }  # fmt: skip
        assert events[2] == {
            "type": "task_retrying", "class": "cpu_short", "priority": 3, "status": "pending",
            "attempts": 1, "error": "boom", "attempt": 1, "backoff_s": 0.5,
        }  # fmt: skip
        # task_started wrote no row update; the retry did
        stored = s.read(lambda c: taskstore.get_tasks(c, ["t2"]))["t2"]
        assert (stored.status, stored.error, stored.started_at) == ("pending", "boom", 101.0)


_TIME = st.none() | st.floats(allow_nan=False, allow_infinity=False)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_DATA = st.fixed_dictionaries(
    {},
    optional={
        "status": st.text(), "result": _JSON, "error": st.none() | st.text(),
        "attempts": st.integers(), "class": st.text(), "priority": st.integers(),
        "workflow_id": st.none() | st.text(), "started_at": _TIME, "finished_at": _TIME,
        "submitted_at": _TIME, "timeout_s": _TIME, "task_class": st.text(),
        "attempt": st.integers(),
    },
)  # fmt: skip


@given(
    event_type=st.sampled_from([*taskstore.STATUS_OF_EVENT, "actor_started", "other"]),
    data=_DATA,
)
def test_the_feed_decodes_an_event_straight_to_the_status_the_change_would_give(
    event_type: str, data: dict[str, Any]
) -> None:
    """The client's feed decodes each event row straight into a ``TaskStatus``; it must give
    what the general path (the change dict, then ``from_change``) gives, for any data."""
    row = (7, event_type, "t-1", json.dumps(data), 1700000000)
    got = taskstore.status_of_event(row)
    if event_type not in taskstore.STATUS_OF_EVENT:
        assert got is None
        return
    assert got == TaskStatus.from_change(taskstore.decode_change(row))


_VALUE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: the general encoder's spelling must come out
    | st.text()
    | st.lists(st.integers(), max_size=3)
)


@given(
    status=st.sampled_from(TASK_STATES),
    attempts=st.integers(min_value=0, max_value=10**12),
    priority=st.integers(min_value=-100, max_value=100),
    task_class=st.text(max_size=12),
    error=st.text(max_size=12),
    times=st.tuples(_TIME, _TIME),
    extra=st.dictionaries(
        st.sampled_from(["attempts", "error", "duration_ms", "backoff_s", "class", "started_at"])
        | st.text(max_size=8),
        _VALUE,
        max_size=5,
    ),
    result_json=st.none() | st.sampled_from(["{}", '{"a":[1,2]}', '"x"']),
)
def test_an_events_text_is_its_data_encoded_as_a_dict(
    status: str,
    attempts: int,
    priority: int,
    task_class: str,
    error: str,
    times: tuple[float | None, float | None],
    extra: dict[str, Any],
    result_json: str | None,
) -> None:
    """Every task event is formatted directly; the text must equal encoding its data as a dict
    (the definition), whatever the row and the transition's own fields hold, including own
    fields that name a leading one (``attempts``, ``error``: they take its place)."""
    spec = TaskSpec(task_id="t-1", task_class=task_class, payload={}, priority=priority)
    row = TaskRow(spec, "", True, status, attempts, None, error, 1.0, *times)
    t = Transition(row, "task_x", extra)
    assert taskstore._event_json(t, result_json) == taskstore._event_json_of_dict(t, result_json)


def test_a_task_changed_twice_in_one_write_ends_as_the_last_change(tmp_path: Path) -> None:
    """Row updates go as multi-row statements, where a row named twice would be ambiguous:
    the last change of a task in one write wins, as when each row was its own statement."""
    with StateStore(tmp_path / "state.db") as s:
        first = _row("t1", submitted_at=100.0)
        s.write(
            lambda c: taskstore.apply_transitions(
                c, [Transition(first, "task_submitted")], 100, insert=True
            )
        )
        retried = _row("t1", submitted_at=100.0, attempts=1, error="boom")
        done = _row("t1", submitted_at=100.0, attempts=2, result={"n": 2}, finished_at=104.0)
        done.status = "completed"
        s.write(
            lambda c: taskstore.apply_transitions(
                c,
                [Transition(retried, "task_retrying"), Transition(done, "task_completed")],
                105,
            )
        )
        stored = s.read(lambda c: taskstore.get_tasks(c, ["t1"]))["t1"]
        assert (stored.status, stored.attempts, stored.result, stored.error) == (
            "completed", 2, {"n": 2}, "",
        )  # fmt: skip
        assert [e["type"] for e in _events(s)["t1"]] == [
            "task_submitted", "task_retrying", "task_completed",
        ]  # fmt: skip

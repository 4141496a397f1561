"""Task rows of the state store: the SQL the scheduler runs, as write ops and read functions.

Every state change writes the task row and an ``events`` row in one transaction. The events
(``task_submitted``, ``task_started``, ``task_retrying``, ``task_completed``, ``task_failed``,
``task_cancelled``) are also the scheduler's change feed: their data carries the new status, and
for a finished task its result, error and timing (the original's ``task_completed`` carried the
result too). One row per transition keeps the write path short.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayinfra.errors import TaskConflictError
from rayinfra.scheduling.tasks import TaskSpec
from rayinfra.store import EventRecord, insert_events

STATUS_OF_EVENT = {
    "task_submitted": "pending",
    "task_retrying": "pending",
    "task_started": "running",
    "task_completed": "completed",
    "task_failed": "failed",
    "task_cancelled": "cancelled",
}
TASK_EVENTS = tuple(STATUS_OF_EVENT)
TERMINAL_EVENTS = ("task_completed", "task_failed", "task_cancelled")

_COLUMNS = (
    "id, identity, class, priority, workflow_id, timeout_s, payload, trusted, status, attempts,"
    " result, error, submitted_at, started_at, finished_at, source, runtime_env"
)


@dataclass
class TaskRow:
    """A task as stored."""

    spec: TaskSpec
    identity: str
    trusted: bool
    status: str
    attempts: int = 0
    result: Any = None
    error: str = ""
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    source: str = ""

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    def status_dict(self) -> dict[str, Any]:
        """The Python client's view: ``task_id, status, result, error`` and timing."""
        duration_ms = (
            (self.finished_at - self.started_at) * 1000.0
            if self.finished_at is not None and self.started_at is not None
            else 0.0
        )
        return {
            "task_id": self.task_id,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "task_class": self.spec.task_class,
            "priority": self.spec.priority,
            "workflow_id": self.spec.workflow_id,
            "timeout_s": self.spec.timeout_s,
            "attempts": self.attempts,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": duration_ms,
        }


@dataclass
class Transition:
    """One task state change to persist: row update + event + feed change."""

    row: TaskRow
    event_type: str  # task_submitted, task_started, task_completed, task_failed, task_cancelled
    event_data: dict[str, Any] = field(default_factory=dict)


def _row(r: Sequence[Any]) -> TaskRow:
    (tid, identity, cls, prio, wf, timeout_s, payload, trusted, status, attempts, result, error,
     sub, started, finished, source, runtime_env) = r  # fmt: skip
    spec = TaskSpec(
        task_id=tid,
        task_class=cls,
        payload=json.loads(payload),
        priority=int(prio),
        workflow_id=wf,
        timeout_s=timeout_s,
        runtime_env=json.loads(runtime_env) if runtime_env else None,
    )
    return TaskRow(
        spec=spec,
        identity=identity,
        trusted=bool(trusted),
        status=status,
        attempts=int(attempts),
        result=json.loads(result) if result is not None else None,
        error=error,
        submitted_at=float(sub),
        started_at=started,
        finished_at=finished,
        source=source,
    )


def _change_data(row: TaskRow) -> dict[str, Any]:
    data: dict[str, Any] = {"status": row.status, "attempts": row.attempts}
    if row.status in ("completed", "failed", "cancelled"):
        data.update(
            result=row.result,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )
    return data


def apply_transitions(
    conn: sqlite3.Connection,
    transitions: Sequence[Transition],
    now: float,
    *,
    insert: bool = False,
    update_rows: bool = True,
) -> int:
    """Write op: insert or update task rows and append their events; returns the last seq.

    ``update_rows=False`` records only the events: used for ``task_started``, whose row update
    would buy nothing (a task running when the scheduler died is re-queued either way, and the
    scheduler answers for its active tasks from memory).
    """
    if not transitions:
        return 0
    if insert:
        conn.executemany(
            f"INSERT INTO tasks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    t.row.task_id,
                    t.row.identity,
                    t.row.spec.task_class,
                    t.row.spec.priority,
                    t.row.spec.workflow_id,
                    t.row.spec.timeout_s,
                    json.dumps(t.row.spec.payload, separators=(",", ":")),
                    int(t.row.trusted),
                    t.row.status,
                    t.row.attempts,
                    None,
                    "",
                    t.row.submitted_at,
                    None,
                    None,
                    t.row.source,
                    json.dumps(t.row.spec.runtime_env) if t.row.spec.runtime_env else None,
                )
                for t in transitions
            ],
        )
    elif update_rows:
        conn.executemany(
            "UPDATE tasks SET status=?, attempts=?, result=?, error=?, started_at=?, finished_at=?"
            " WHERE id=?",
            [
                (
                    t.row.status,
                    t.row.attempts,
                    json.dumps(t.row.result, separators=(",", ":"))
                    if t.row.result is not None
                    else None,
                    t.row.error,
                    t.row.started_at,
                    t.row.finished_at,
                    t.row.task_id,
                )
                for t in transitions
            ],
        )
    seqs = insert_events(
        conn,
        [
            EventRecord(
                0,
                t.event_type,
                t.row.task_id,
                {
                    "class": t.row.spec.task_class,
                    "priority": t.row.spec.priority,
                    **_change_data(t.row),
                    **t.event_data,
                },
                0,
            )
            for t in transitions
        ],
        now,
    )
    return seqs[-1]


def change_from_event(event: EventRecord) -> dict[str, Any]:
    """A task event as a change-feed item: ``{seq, key, kind, data}`` (data has ``status``)."""
    data, kind = event.data, "lifecycle"
    if event.event_type in STATUS_OF_EVENT:
        data, kind = dict(data), "state"
        data.setdefault("status", STATUS_OF_EVENT[event.event_type])
    return {
        "seq": event.seq,
        "key": event.resource_id,
        "kind": kind,
        "data": data,
        "ts": event.timestamp,
    }


def load_unfinished(conn: sqlite3.Connection) -> list[TaskRow]:
    """Tasks to recover after a restart (pending and running), oldest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE status IN ('pending','running') ORDER BY submitted_at"
    ).fetchall()
    return [_row(r) for r in rows]


def identities(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """``id -> identity`` of the given ids that exist (the submit path's duplicate check)."""
    if len(ids) == 1:
        rows = conn.execute("SELECT id, identity FROM tasks WHERE id = ?", (ids[0],)).fetchall()
    else:
        rows = conn.execute(
            "SELECT id, identity FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def insert_new(
    conn: sqlite3.Connection, rows: Sequence[TaskRow], now: float
) -> tuple[set[str], int]:
    """Write op: insert the tasks whose id is new, with their ``task_submitted`` events.

    Returns ``(ids inserted, last event seq)``. An existing id with the same identity is an
    idempotent repeat; with a different one the whole op fails with :class:`TaskConflictError`.
    """
    existing = identities(conn, [r.task_id for r in rows])
    for r in rows:
        old = existing.get(r.task_id)
        if old is not None and old != r.identity:
            raise TaskConflictError(
                "task_id",
                f"{r.task_id!r} already exists with a different class, payload, priority, "
                "workflow_id or timeout",
            )
    fresh = [r for r in rows if r.task_id not in existing]
    seq = apply_transitions(
        conn,
        [
            Transition(
                r,
                "task_submitted",
                {"workflow_id": r.spec.workflow_id} if r.spec.workflow_id else {},
            )
            for r in fresh
        ],
        now,
        insert=True,
    )
    return {r.task_id for r in fresh}, seq


def submitted_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[tuple[int, str]]:
    """``(seq, task id)`` of ``task_submitted`` events after ``after_seq``, oldest first."""
    return [
        (int(seq), str(tid))
        for seq, tid in conn.execute(
            "SELECT seq, resource_id FROM events WHERE event_type = 'task_submitted' AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
    ]


def get_tasks(conn: sqlite3.Connection, ids: Collection[str]) -> dict[str, TaskRow]:
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    ).fetchall()
    return {r[0]: _row(r) for r in rows}


def list_tasks(
    conn: sqlite3.Connection, status: str | None, task_class: str | None, limit: int
) -> list[TaskRow]:
    sql = f"SELECT {_COLUMNS} FROM tasks"
    filters = {column: v for column, v in (("status", status), ("class", task_class)) if v}
    if filters:
        sql += " WHERE " + " AND ".join(f"{column} = ?" for column in filters)
    sql += " ORDER BY submitted_at DESC LIMIT ?"
    return [_row(r) for r in conn.execute(sql, [*filters.values(), limit]).fetchall()]


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        s: int(n) for s, n in conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status")
    }


def purge_finished(conn: sqlite3.Connection, older_than: float) -> dict[str, int]:
    """Write op: delete finished tasks (and old events/changes) older than ``older_than``."""
    tasks = conn.execute(
        "DELETE FROM tasks WHERE status IN ('completed','failed','cancelled') AND finished_at < ?",
        (older_than,),
    ).rowcount
    events = conn.execute("DELETE FROM events WHERE ts < ?", (int(older_than),)).rowcount
    changes = conn.execute("DELETE FROM changes WHERE ts < ?", (older_than,)).rowcount
    return {"tasks": tasks, "events": events, "changes": changes}

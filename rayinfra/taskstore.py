"""Task rows of the state store: the SQL the scheduler runs, as write ops and read functions.

Every state change writes the task row and an ``events`` row in one transaction. The events
(``task_submitted``, ``task_started``, ``task_retrying``, ``task_completed``, ``task_failed``,
``task_cancelled``) are also the scheduler's change feed: their data carries the new status, and
for a finished task its result, error and timing (the original's ``task_completed`` carried the
result too). One row per transition keeps the write path short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rayinfra.errors import StorageFullError, TaskConflictError
from rayinfra.json_encode import loads_stored
from rayinfra.models import TaskStatus, decode_list_cursor, encode_list_cursor
from rayinfra.scheduling.tasks import TASK_STATES, TERMINAL_STATES, TaskSpec
from rayinfra.store import (
    PURGE_STEP_ROWS,
    Position,
    RawEvent,
    StateStore,
    delete_old_changes_step,
    delete_old_events,
    delete_step,
    dumps_compact,
    execute_values,
    insert_encoded_events,
    run_steps,
)

log = logging.getLogger(__name__)

FULL_RETRY_FIRST_S = 0.1
FULL_RETRY_MAX_S = 5.0

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


@dataclass(slots=True)
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
        sp = self.spec
        return status_dict(
            (self.task_id, sp.task_class, sp.priority, sp.workflow_id, sp.timeout_s, self.status,
             self.attempts, self.result, self.error, self.submitted_at, self.started_at,
             self.finished_at)
        )  # fmt: skip

    def status_row(self) -> StatusRow:
        """This task as :func:`get_status_rows` reads it from the store."""
        sp, result = self.spec, self.result
        return (
            self.task_id, sp.task_class, sp.priority, sp.workflow_id, sp.timeout_s, self.status,
            self.attempts, None if result is None else dumps_compact(result), self.error,
            self.submitted_at, self.started_at, self.finished_at,
        )  # fmt: skip


_STATUS_COLUMNS = (
    "id, class, priority, workflow_id, timeout_s, status, attempts, result, error, submitted_at,"
    " started_at, finished_at"
)

StatusRow = tuple[Any, ...]
"""A task's :data:`_STATUS_COLUMNS` as stored, ``result`` its JSON text (``None``: no result):
what the scheduler answers a status read with, for :meth:`TaskStatus.from_status_row` to read
on the asking side (a tuple crosses an actor boundary for a fraction of a dict's cost)."""
ROW_STATUS = 5
"""Where a :data:`StatusRow` has the task's status."""


def status_dict(r: Sequence[Any]) -> dict[str, Any]:
    """A task's status dict (:meth:`TaskRow.status_dict`) from its :data:`_STATUS_COLUMNS`
    (the result decoded)."""
    (tid, cls, prio, wf, timeout_s, status, attempts, result, error, sub, started, finished) = r
    return {
        "task_id": tid,
        "status": status,
        "result": result,
        "error": error,
        "task_class": cls,
        "priority": int(prio),
        "workflow_id": wf,
        "timeout_s": timeout_s,
        "attempts": int(attempts),
        "submitted_at": float(sub),
        "started_at": started,
        "finished_at": finished,
        "duration_ms": (finished - started) * 1000.0
        if finished is not None and started is not None
        else 0.0,
    }


@dataclass
class Transition:
    """One task state change to persist: row update + event + feed change."""

    row: TaskRow
    event_type: str  # task_submitted, task_started, task_completed, task_failed, task_cancelled
    event_data: dict[str, Any] = field(default_factory=dict)


def _row(r: Sequence[Any]) -> TaskRow:
    """A stored row as a :class:`TaskRow`. Lean, since the scheduler may hold a million (and
    reads each one back after its submit): the payload stays its JSON text (decoded on first
    use), the identity (only a submit compares it, in SQL) is left out, the few distinct
    class, status and source names are shared (interned) instead of one copy per row, and
    numbers come as the columns' affinities make them (INTEGER: int, REAL: float) with no
    conversion; both objects built positionally (~1/3 cheaper than by keyword)."""
    (tid, _identity, cls, prio, wf, timeout_s, payload, trusted, status, attempts, result, error,
     sub, started, finished, source, runtime_env) = r  # fmt: skip
    spec = TaskSpec(
        tid,  # task_id
        sys.intern(cls),  # task_class
        None,  # the payload: decoded from its text if something asks (the executor does)
        prio,  # priority
        wf,  # workflow_id
        timeout_s,
        json.loads(runtime_env) if runtime_env else None,
        payload,  # payload_json
    )
    return TaskRow(
        spec,
        "",  # identity
        bool(trusted),
        sys.intern(status),
        attempts,
        loads_stored(result) if result is not None else None,
        error,
        sub,  # submitted_at
        started,
        finished,
        sys.intern(source),
    )


def _event_json(t: Transition, result_json: str | None) -> str:
    """A task event's data as compact JSON: class, priority, status and attempts; for a task
    that ended also its error, times and result; then the transition's own fields (one that
    names a leading field takes its place, as ``dict.update`` would). The result comes as the
    JSON text the row stores (``None``: null), spliced in rather than encoded a second time.

    Formatted directly (every task's events pass here twice): the leading fields up to
    ``"attempts":`` come from :func:`_event_head`, times and numbers are spelled inline; equal
    to :func:`_event_json_of_dict`, which it falls back to for any other shape."""
    row, extra = t.row, t.event_data
    status = row.status
    ended = status in TERMINAL_STATES
    attempts, error, tail = row.attempts, row.error, ""
    if extra:
        for key, value in extra.items():
            if key == "attempts":
                attempts = value
            elif type(key) is not str or key in _LEADING[ended]:
                if not (ended and key == "error"):
                    return _event_json_of_dict(t, result_json)
                error = value
            else:
                tail += f",{_json_str(key)}:{_json_number(value)}"
    head = _event_head(row.spec, status)
    if not ended:
        return f"{head}{_json_number(attempts)}{tail}}}"
    err = _json_str(error) if type(error) is str else _json_value(error)
    started, finished = _json_number(row.started_at), _json_number(row.finished_at)
    return (
        f'{head}{_json_number(attempts)},"error":{err},"started_at":{started},'
        f'"finished_at":{finished}{tail},"result":{result_json or "null"}}}'
    )


_LEADING = {
    False: frozenset({"class", "priority", "status"}),
    True: frozenset({"class", "priority", "status", "error", "started_at", "finished_at"}),
}
"""An event's leading fields besides ``attempts`` (a transition's own data may set that), by
whether the task ended; of these the own data may set only an ended task's ``error``: any
other is left to the general path."""

_HEADS: dict[tuple[str, int, str], str] = {}
_HEADS_MAX = 4096


def _event_head(spec: TaskSpec, status: str) -> str:
    """``{"class":...,"priority":...,"status":...,"attempts":`` for a task: one string per
    class, priority and status, formatted once (up to :data:`_HEADS_MAX` of them)."""
    cls, prio = spec.task_class, spec.priority
    key = (cls, prio, status)
    cacheable = type(prio) is int and type(cls) is str  # (a bool priority is not 1 or 0 here)
    head = _HEADS.get(key) if cacheable else None
    if head is None:
        head = (
            f'{{"class":{_json_value(cls)},"priority":{_json_value(prio)},'
            f'"status":{_json_value(status)},"attempts":'
        )
        if cacheable and len(_HEADS) < _HEADS_MAX:
            _HEADS[key] = head
    return head


_json_str = json.encoder.encode_basestring_ascii  # what the store's encoder does to a str


def _json_number(value: Any) -> str:
    """:func:`_json_value`, quicker for what an event's numbers mostly are: an int, a finite
    float."""
    kind = type(value)
    if kind is float and value - value == 0.0:
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    return _json_value(value)


def _json_value(value: Any) -> str:
    """``dumps_compact(value)``, with the scalars an event holds formatted directly."""
    kind = type(value)
    if kind is str:
        return _json_str(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0.0:  # finite (json spells the others NaN, Infinity)
        return float.__repr__(value)
    if value is None:
        return "null"
    return dumps_compact(value)


def _event_json_of_dict(t: Transition, result_json: str | None) -> str:
    """:func:`_event_json` by building the data as a dict and encoding it: the definition."""
    row = t.row
    data: dict[str, Any] = {
        "class": row.spec.task_class,
        "priority": row.spec.priority,
        "status": row.status,
        "attempts": row.attempts,
    }
    ended = row.status in TERMINAL_STATES
    if ended:
        data.update(error=row.error, started_at=row.started_at, finished_at=row.finished_at)
    if t.event_data:
        data.update(t.event_data)
    text = dumps_compact(data)
    if not ended:
        return text
    return f'{text[:-1]},"result":{result_json or "null"}}}'  # text ends with "}", never "{}"


_UPDATE_SQL = (
    "UPDATE tasks SET status=v.column1, attempts=v.column2, result=v.column3, error=v.column4,"
    " started_at=v.column5, finished_at=v.column6 FROM (VALUES {values}) AS v"
    " WHERE tasks.id = v.column7"
)


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
    ts = int(now)
    events: list[tuple[str, str, str, int]] = []
    if insert:
        rows = []
        for t in transitions:
            row, spec = t.row, t.row.spec
            rows.append(
                (
                    spec.task_id,
                    row.identity,
                    spec.task_class,
                    spec.priority,
                    spec.workflow_id,
                    spec.timeout_s,
                    spec.payload_json or dumps_compact(spec.payload),
                    int(row.trusted),
                    row.status,
                    row.attempts,
                    None,
                    "",
                    row.submitted_at,
                    None,
                    None,
                    row.source,
                    json.dumps(spec.runtime_env) if spec.runtime_env else None,
                )
            )
            events.append((t.event_type, spec.task_id, _event_json(t, None), ts))
        execute_values(conn, f"INSERT INTO tasks ({_COLUMNS}) VALUES {{values}}", rows)
    else:
        updates: dict[str, tuple[Any, ...]] = {}  # by id: a task changed twice ends as the last
        for t in transitions:
            row = t.row
            result = None if row.result is None else dumps_compact(row.result)
            if update_rows:
                updates[row.spec.task_id] = (
                    row.status,
                    row.attempts,
                    result,
                    row.error,
                    row.started_at,
                    row.finished_at,
                    row.spec.task_id,
                )
            events.append((t.event_type, row.spec.task_id, _event_json(t, result), ts))
        execute_values(conn, _UPDATE_SQL, list(updates.values()))
    return insert_encoded_events(conn, events)[-1]


async def persist(store: StateStore, transitions: Sequence[Transition], now: float) -> int:
    """:func:`apply_transitions` committed; while the store's disk is full it waits for space,
    trying again with back-off (0.1 s doubling to 5 s, each attempt logged): the tasks stay as
    they are in memory meanwhile, and nothing an executor reported is dropped."""
    delay = FULL_RETRY_FIRST_S
    while True:
        try:
            return await store.awrite(partial(apply_transitions, transitions=transitions, now=now))
        except StorageFullError as e:
            log.error(
                "%s; %d task state changes wait, next try in %.1fs", e, len(transitions), delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, FULL_RETRY_MAX_S)


def decode_change(row: RawEvent) -> dict[str, Any]:
    """An event row of the scheduler's feed as a change: ``{seq, key, kind, data, ts}``; a task
    event is ``kind: "state"`` and its data has ``status``, an ``actor_started`` is
    ``"lifecycle"``."""
    seq, event_type, key, data_json, ts = row
    data, kind = loads_stored(data_json), "lifecycle"
    if event_type in STATUS_OF_EVENT:
        kind = "state"
        data.setdefault("status", STATUS_OF_EVENT[event_type])
    return {"seq": int(seq), "key": key, "kind": kind, "data": data, "ts": int(ts)}


def status_of_event(row: RawEvent) -> TaskStatus | None:
    """A task event row of the scheduler's feed as the state it reports (``None``: not a task's
    event, e.g. ``actor_started``); equal to ``TaskStatus.from_change(decode_change(row))``,
    decoded straight into the status."""
    status = STATUS_OF_EVENT.get(row[1])
    if status is None:
        return None
    return TaskStatus.from_event_data(row[2], status, loads_stored(row[3]))


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


def submitted_after(
    conn: sqlite3.Connection, after_seq: int, limit: int
) -> list[tuple[int, TaskRow | None]]:
    """``(seq, row)`` of each ``task_submitted`` event after ``after_seq``, oldest first, with
    the task's row as it is now (``None`` if it was purged since): one join, no id list."""
    cols = ", ".join(f"t.{c.strip()}" for c in _COLUMNS.split(","))
    return [
        (int(r[0]), None if r[1] is None else _row(r[1:]))
        for r in conn.execute(
            f"SELECT e.seq, {cols} FROM events e LEFT JOIN tasks t ON t.id = e.resource_id"
            " WHERE e.event_type = 'task_submitted' AND e.seq > ? ORDER BY e.seq LIMIT ?",
            (after_seq, limit),
        )
    ]


def read_submitted(
    store: StateStore, after_seq: int, limit: int = 5000
) -> Iterator[tuple[int, list[TaskRow]]]:
    """Every ``task_submitted`` event after ``after_seq`` with its task's row as it is now (a
    purged one left out), ``limit`` at a time: ``(seq of the last event read, rows)``."""
    while True:
        found = store.read(partial(submitted_after, after_seq=after_seq, limit=limit))
        if not found:
            return
        after_seq = found[-1][0]
        yield after_seq, [r for _, r in found if r is not None]
        if len(found) < limit:
            return


def get_tasks(conn: sqlite3.Connection, ids: Collection[str]) -> dict[str, TaskRow]:
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    ).fetchall()
    return {r[0]: _row(r) for r in rows}


def get_status_rows(
    conn: sqlite3.Connection, ids: Collection[str], finished_only: bool = False
) -> dict[str, StatusRow | str]:
    """:data:`StatusRow` of the given ids that exist, read without their payloads (what a
    waiter asks for: the scheduler answers for its active tasks from memory, the rest from
    here); with ``finished_only`` a task not finished has its status (a string) instead."""
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT {_STATUS_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    )
    if not finished_only:
        return {r[0]: r for r in rows}
    return {r[0]: r if r[ROW_STATUS] in TERMINAL_STATES else r[ROW_STATUS] for r in rows}


def get_statuses(conn: sqlite3.Connection, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Status dicts (:meth:`TaskRow.status_dict`) of the given ids that exist: the store read
    directly, with no scheduler to ask (a stopped runtime's tasks); the scheduler answers with
    :func:`get_status_rows`."""
    return {
        t: status_dict((*r[:7], None if r[7] is None else loads_stored(r[7]), *r[8:]))
        for t, r in get_status_rows(conn, ids).items()
    }


LiveRow = Callable[[str], "TaskRow | None"]
"""The scheduler's row of a task it answers for (one not finished), ``None`` for any other."""


async def statuses(
    store: StateStore, ids: Sequence[str], live: LiveRow, finished_only: bool = False
) -> dict[str, StatusRow | None]:
    """:data:`StatusRow` by id (``None``: unknown): a live task's from memory, the rest read
    from the store without their payloads. With ``finished_only`` the tasks not finished are
    left out (a waiter's first read: a row built and sent for each would be thrown away)."""
    out: dict[str, StatusRow | str] = {}
    for t in ids:
        row = live(t)
        if row is None:
            continue
        finished = row.status in TERMINAL_STATES
        out[t] = row.status_row() if finished or not finished_only else row.status
    missing = [t for t in ids if t not in out]
    if missing:
        out.update(
            await store.aread(partial(get_status_rows, ids=missing, finished_only=finished_only))
        )
    found = {t: out.get(t) for t in ids}
    return {t: s for t, s in found.items() if not isinstance(s, str)}


async def list_statuses(
    store: StateStore,
    live: LiveRow,
    status: str | None,
    task_class: str | None,
    limit: int,
    after: str | None,
) -> list[dict[str, Any]]:
    """A page of :func:`list_task_page` as status dicts, each with its ``cursor``; a live
    task's state from memory (newer than its row)."""
    page = await store.aread(
        partial(list_task_page, status=status, task_class=task_class, limit=limit, after=after)
    )
    return [{**(live(r.task_id) or r).status_dict(), "cursor": cursor} for r, cursor in page]


ListCursor = tuple[float, int]
"""A listing's position: ``(submitted_at, rowid)`` of the last task of the previous page (the
index order: tasks submitted in one batch share ``submitted_at``; the rowid orders them)."""


def _keys_page(
    conn: sqlite3.Connection,
    filters: dict[str, str],
    limit: int,
    after: ListCursor | None,
) -> list[tuple[float, int]]:
    """``(submitted_at, rowid)`` of the newest ``limit`` tasks matching ``filters`` (exact
    columns) before ``after``: one walk of an index in that order (the keyset of a page)."""
    where = [f"{column} = ?" for column in filters]
    params: list[Any] = list(filters.values())
    if after is not None:
        where.append("(submitted_at, rowid) < (?, ?)")
        params += [after[0], after[1]]
    sql = "SELECT submitted_at, rowid FROM tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY submitted_at DESC, rowid DESC LIMIT ?"
    return [(float(t), int(r)) for t, r in conn.execute(sql, [*params, limit])]


def list_task_page(
    conn: sqlite3.Connection,
    status: str | None,
    task_class: str | None,
    limit: int,
    after: str | None = None,
) -> list[tuple[TaskRow, str]]:
    """The newest ``limit`` tasks (of one status and/or class), newest first, each with the
    cursor of its position (:func:`rayinfra.models.encode_list_cursor`); with ``after`` (such a
    cursor; a bad one is InvalidArgumentError naming ``after``) the ones after that position.
    Each shape walks an index in
    ``(submitted_at, rowid)`` order (``tasks_submitted_idx``, ``tasks_status_idx``,
    ``tasks_class_idx``) and reads at most ``limit`` rows (per status for a class alone),
    however many tasks there are."""
    position = None if after is None else decode_list_cursor(after)
    if limit <= 0:
        return []
    if task_class and not status:  # the class index is (class, status, ...): merge the states
        keys = sorted(
            (
                k
                for s in TASK_STATES
                for k in _keys_page(conn, {"class": task_class, "status": s}, limit, position)
            ),
            reverse=True,
        )[:limit]
    else:
        filters = {c: v for c, v in (("status", status), ("class", task_class)) if v}
        keys = _keys_page(conn, filters, limit, position)
    if not keys:
        return []
    found = {
        int(r[0]): _row(r[1:])
        for r in conn.execute(
            f"SELECT rowid, {_COLUMNS} FROM tasks WHERE rowid IN (SELECT value FROM json_each(?))",
            (json.dumps([rowid for _, rowid in keys]),),
        )
    }
    return [(found[rowid], encode_list_cursor(at, rowid)) for at, rowid in keys if rowid in found]


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Tasks per status: a walk of the status index (about 50 ms per million tasks), so callers
    on a status path cache it (:class:`StatusCounts`)."""
    return {
        s: int(n) for s, n in conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status")
    }


class StatusCounts:
    """:func:`count_by_status`, at most ``max_age_s`` old, without waiting on it: the first call
    counts; later ones answer at once with the last count and, when it is older than
    ``max_age_s``, start one recount in the background (never two at once). So a status call
    costs microseconds however many tasks there are, and the store counts at most once per
    ``max_age_s``, only while someone asks."""

    def __init__(self, store: StateStore, max_age_s: float = 5.0) -> None:
        self._store = store
        self._max_age_s = max_age_s
        self._counts: dict[str, int] | None = None
        self._at = 0.0
        self._recount: asyncio.Task[None] | None = None

    async def _count(self) -> None:
        started = time.monotonic()
        self._counts = await self._store.aread(count_by_status)
        self._at = started

    async def get(self) -> tuple[dict[str, int], float]:
        """``(counts, their age in seconds)``."""
        if self._counts is None:
            await self._count()
        elif time.monotonic() - self._at > self._max_age_s and (
            self._recount is None or self._recount.done()
        ):
            self._recount = asyncio.create_task(self._count())
        assert self._counts is not None
        return dict(self._counts), time.monotonic() - self._at


#: a finished task; the unary ``+`` keeps SQLite from walking the status index instead of
#: ``finished_at``'s (a million completed rows would then be scanned by every step)
FINISHED_SQL = "+status IN ('completed','failed','cancelled')"


def purge_finished_step(
    conn: sqlite3.Connection, older_than: float, *, after: Position | None = None, limit: int = 1000
) -> tuple[int, Position | None]:
    """Write op: one step (``limit`` rows looked at, in ``finished_at`` order) of deleting the
    finished tasks that finished before ``older_than`` (:func:`rayinfra.store.delete_step`)."""
    return delete_step(
        conn,
        "tasks",
        ("finished_at", "rowid"),
        "finished_at < ?",
        [older_than],
        after=after,
        limit=limit,
        only=FINISHED_SQL,
    )


def purge_finished(
    conn: sqlite3.Connection, older_than: float, *, keep_unpublished: bool = False
) -> dict[str, int]:
    """Write op: delete finished tasks (and old events/changes) older than ``older_than``, in
    this one transaction (retention goes in steps: :mod:`rayinfra.retention`);
    ``keep_unpublished`` keeps every event Kafka has not acknowledged (:func:`delete_old_events`)."""
    step = PURGE_STEP_ROWS
    tasks = run_steps(lambda a: purge_finished_step(conn, older_than, after=a, limit=step))
    events = delete_old_events(conn, int(older_than), keep_unpublished=keep_unpublished)
    changes = run_steps(lambda a: delete_old_changes_step(conn, older_than, after=a, limit=step))
    return {"tasks": tasks, "events": events, "changes": changes}

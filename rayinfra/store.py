"""Durable state store shared by the control actors.

One SQLite database file (WAL mode) on the head node. Several processes may open the
same file at once: every connection sets ``busy_timeout`` and write transactions use
``BEGIN IMMEDIATE``. Inside one process all writes go through a single writer thread
that group-commits queued operations; reads use per-thread connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from rayinfra import wal
from rayinfra._deprecation import renamed
from rayinfra.errors import StorageFullError
from rayinfra.json_encode import compact_encoder, loads_stored

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")
log = logging.getLogger(__name__)

SCHEMA_VERSION: int = 5
BUSY_TIMEOUT_S = 10.0
BEGIN_RETRY_FIRST_S = 0.00005
BEGIN_RETRY_MAX_S = 0.002
_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_SAVEPOINT = "rayinfra_op"
PURGE_STEP_ROWS = (
    1000  # rows one step of a chunked delete looks at (config: state.purge_chunk_rows)
)


@dataclass(frozen=True)
class EventRecord:
    """An audit/event row. ``seq`` is 0 before insert; ``timestamp`` is unix seconds."""

    seq: int
    event_type: str
    resource_id: str
    data: dict[str, Any]
    timestamp: int


RawEvent = tuple[int, str, str, str, int]
"""An event row as stored: ``(seq, event_type, resource_id, data JSON, ts)``."""


def decode_event(row: RawEvent) -> EventRecord:
    seq, event_type, resource_id, data, ts = row
    return EventRecord(int(seq), event_type, resource_id, loads_stored(data), int(ts))


class EventFilter(TypedDict, total=False):
    """Which events a read returns, after its cursor (:meth:`StateStore.event_rows`)."""

    since_ts: int | None
    types: Collection[str] | None
    resource_ids: Collection[str] | None
    limit: int


class EventQuery(EventFilter, total=False):
    """:meth:`StateStore.event_rows`' arguments: the filter and the cursor."""

    after_seq: int


@dataclass(frozen=True)
class ChangeRecord:
    """One row of a change feed owned by ``stream`` (e.g. ``"scheduler"``)."""

    seq: int
    stream: str
    key: str
    kind: str
    data: dict[str, Any]
    ts: float


SQLITE_FULL = 13  # sqlite3.SQLITE_FULL: "database or disk is full"


class StoreError(RuntimeError):
    """Raised for state store failures (closed store, broken transactions, ...)."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer rayinfra than the one running."""


Migration = Callable[[sqlite3.Connection], None]


def _migrate_v1(conn: sqlite3.Connection) -> None:
    for stmt in (
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT NOT NULL,"
        " resource_id TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL)",
        "CREATE INDEX events_ts_idx ON events (ts)",
        "CREATE INDEX events_type_seq_idx ON events (event_type, seq)",
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL,"
        " key TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL, ts REAL NOT NULL)",
        "CREATE INDEX changes_stream_seq_idx ON changes (stream, seq)",
        "CREATE INDEX changes_ts_idx ON changes (ts)",
        "CREATE TABLE kv (namespace TEXT, key TEXT, value TEXT NOT NULL, updated REAL NOT NULL,"
        " PRIMARY KEY (namespace, key))",
    ):
        conn.execute(stmt)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Tasks of the scheduler: one row per task id, updated in place through its states."""
    for stmt in (
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, identity TEXT NOT NULL, class TEXT NOT NULL,"
        " priority INTEGER NOT NULL, workflow_id TEXT NOT NULL, timeout_s REAL,"
        " payload TEXT NOT NULL, trusted INTEGER NOT NULL, status TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT NOT NULL DEFAULT '',"
        " submitted_at REAL NOT NULL, started_at REAL, finished_at REAL, source TEXT NOT NULL"
        " DEFAULT '')",
        "CREATE INDEX tasks_status_idx ON tasks (status)",
        "CREATE INDEX tasks_finished_idx ON tasks (finished_at)",
        "CREATE INDEX tasks_submitted_idx ON tasks (submitted_at)",
    ):
        conn.execute(stmt)


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Per-task Ray runtime_env (JSON), NULL for tasks without one."""
    conn.execute("ALTER TABLE tasks ADD COLUMN runtime_env TEXT")


def _migrate_v4(conn: sqlite3.Connection) -> None:
    """Listing at scale (a million rows): every task listing, filtered or not, walks an index in
    ``(submitted_at, rowid)`` order (a keyset page: no sort, no OFFSET, no table scan). The
    status index gains ``submitted_at`` (the rowid is in every index already); a class index
    serves ``--class``. Ids are left out of these indexes on purpose: a 32-character id in two
    more indexes doubled the cost of a submit's insert."""
    for stmt in (
        "DROP INDEX IF EXISTS tasks_status_idx",
        "CREATE INDEX tasks_status_idx ON tasks (status, submitted_at)",
        "CREATE INDEX tasks_class_idx ON tasks (class, status, submitted_at)",
    ):
        conn.execute(stmt)


def _migrate_v5(conn: sqlite3.Connection) -> None:
    """``finished_at`` is indexed only where it is set. Every row is written at admission with
    it NULL, and that NULL's index entry cost a page in each admission's commit and another
    when the task finished (~1.4 of the 17.5 pages a commit of ten tasks wrote). Retention,
    the one reader, asks for ``finished_at < ?``, which implies the index's condition."""
    for stmt in (
        "DROP INDEX IF EXISTS tasks_finished_idx",
        "CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL",
    ):
        conn.execute(stmt)


MIGRATIONS: dict[int, Migration] = {
    1: _migrate_v1,
    2: _migrate_v2,
    3: _migrate_v3,
    4: _migrate_v4,
    5: _migrate_v5,
}
"""version -> function bringing the database from ``version - 1`` to ``version``."""


dumps_compact = compact_encoder()
"""``json.dumps(value, separators=(",", ":"))`` with the encoder built once (json.dumps with
any option builds one per call, ~2.5 us): how the store writes JSON."""


def _retry_locked(fn: Callable[[], T], timeout_s: float = BUSY_TIMEOUT_S) -> T:
    """Run ``fn``, retrying while SQLite says the database is locked/busy, up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _is_busy(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _begin_immediate(conn: sqlite3.Connection, timeout_s: float) -> float | None:
    """``BEGIN IMMEDIATE`` (take the write lock), waiting up to ``timeout_s`` while another
    process holds it: the seconds waited, ``None`` if it is still held then (``timeout_s=0``:
    try once).

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between tries, so a lock held for 50 us
    by another process cost a whole millisecond; here the waits start at 50 us and double up to
    2 ms. In WAL mode taking the lock is the only place a writer waits on another.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        delay = BEGIN_RETRY_FIRST_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return time.monotonic() - t0 if delay > BEGIN_RETRY_FIRST_S else 0.0
            except sqlite3.OperationalError as e:
                remaining = deadline - time.monotonic()
                if not _is_busy(e) or remaining <= 0:
                    if _is_busy(e) and timeout_s == 0:
                        return None
                    raise
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, BEGIN_RETRY_MAX_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("rollback failed")


def _select_changes(
    conn: sqlite3.Connection,
    stream: str,
    after_seq: int,
    keys: Collection[str] | None,
    limit: int,
) -> list[ChangeRecord]:
    if limit <= 0 or (keys is not None and not keys):
        return []
    sql = "SELECT seq, stream, key, kind, data, ts FROM changes WHERE stream = ? AND seq > ?"
    params: list[Any] = [stream, after_seq]
    if keys is not None:
        sql += " AND key IN (SELECT value FROM json_each(?))"
        params.append(dumps_compact(list(keys)))
    sql += " ORDER BY seq LIMIT ?"
    params.append(limit)
    return [
        ChangeRecord(int(s), st, k, kd, loads_stored(d), float(ts))
        for s, st, k, kd, d, ts in conn.execute(sql, params)
    ]


_EVENT_SQL = "INSERT INTO events (event_type, resource_id, data, ts) VALUES {values}"
_CHANGE_SQL = "INSERT INTO changes (stream, key, kind, data, ts) VALUES {values}"

VALUES_ROWS = 64
"""Rows per statement of :func:`execute_values` (64 x 17 columns stays far below SQLite's
32,766 parameters)."""


def execute_values(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``executemany`` of ``rows`` as multi-row statements: ``sql`` has one ``{values}`` where
    the rows' ``VALUES`` list goes (``INSERT ... VALUES {values}``, or ``UPDATE ... FROM
    (VALUES {values}) AS v WHERE ...``, whose columns are ``v.column1``...). Rows are of one
    width; an ``UPDATE`` must not name a row twice (which row would win is undefined).

    Why: ``sqlite3`` lets go of the GIL around every step, once per row of an ``executemany``,
    and in a process whose other threads want the GIL each of those is a thread switch. One
    step per :data:`VALUES_ROWS` rows instead: beside an event loop thread that is busy most
    of the time, a task's finish (row update + event) costs its process 17 instead of 21 us
    of CPU and half the wall time (docs/benchmarks.md, session 16). Chunks are
    :data:`VALUES_ROWS` rows, then powers of two, so few distinct statements are prepared."""
    n, i = len(rows), 0
    while i < n:
        left = n - i
        size = VALUES_ROWS if left >= VALUES_ROWS else 1 << (left.bit_length() - 1)
        conn.execute(
            _values_sql(sql, len(rows[i]), size), list(chain.from_iterable(rows[i : i + size]))
        )
        i += size


@lru_cache(maxsize=256)
def _values_sql(sql: str, width: int, size: int) -> str:
    group = "(" + ",".join("?" * width) + ")"
    return sql.replace("{values}", ",".join([group] * size))


def _insert_many(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
    """:func:`execute_values`, then derive the rowids: inside the writer's IMMEDIATE
    transaction nobody else inserts, so AUTOINCREMENT hands out consecutive ids ending at
    last_insert_rowid()."""
    if not rows:
        return []
    execute_values(conn, sql, rows)
    last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
    return list(range(last - len(rows) + 1, last + 1))


def _event_rows(events: Sequence[EventRecord], now: float) -> list[tuple[Any, ...]]:
    return [
        (e.event_type, e.resource_id, dumps_compact(e.data), e.timestamp or int(now))
        for e in events
    ]


EVENT_BUS_CURSOR = ("event_bus", "cursor")
"""kv ``(namespace, key)`` of the event bus's cursor: the highest event seq Kafka acknowledged
together with every event before it (an int)."""


Position = tuple[Any, Any]
"""Where a chunked delete resumes: the ordering key ``(column, rowid)`` of the last row looked at."""
StepResult = tuple[int, Position | None]
"""What one step of a chunked delete returns: ``(deleted, where the next step resumes)``."""


def delete_step(
    conn: sqlite3.Connection,
    table: str,
    order: tuple[str, str],
    where: str,
    params: Sequence[Any],
    *,
    after: Position | None,
    limit: int,
    only: str = "",
    only_params: Sequence[Any] = (),
) -> tuple[int, Position | None]:
    """Write op part: one bounded step of a walk that deletes the rows of ``table`` matching
    ``where`` (a range on an indexed column, such as ``ts < ?``) and ``only`` (checked per row).

    The walk goes in ``order``: that column, then the rowid (``order[1]`` names it: ``rowid``
    or the table's INTEGER PRIMARY KEY), the index's own order. A step finds the next ``limit``
    rows after ``after`` by seeking the index to that exact position (the rest of ``after``'s
    column value by rowid, then the values after it), then deletes those rows by rowid: it
    touches ``limit`` index entries and rows however large the table, and however many rows
    share one value (a row-value range ``(col, rowid) > (?, ?)`` would seek on ``col`` alone and
    scan every row with that value, per step). A row ``only`` keeps is passed over, never looked
    at again. Returns ``(deleted, where the next step resumes)``; ``None`` when the walk is done.
    """
    a, b = order
    keys: list[tuple[Any, Any]] = []
    rest = where
    rest_params = list(params)
    if after is not None:
        keys = conn.execute(
            f"SELECT {a}, {b} FROM {table} WHERE {where} AND {a} = ? AND {b} > ?"  # noqa: S608
            f" ORDER BY {b} LIMIT ?",
            [*params, after[0], after[1], limit],
        ).fetchall()
        rest += f" AND {a} > ?"
        rest_params.append(after[0])
    if len(keys) < limit:
        keys += conn.execute(
            f"SELECT {a}, {b} FROM {table} WHERE {rest} ORDER BY {a}, {b} LIMIT ?",  # noqa: S608
            [*rest_params, limit - len(keys)],
        ).fetchall()
    if not keys:
        return 0, None
    sql = f"DELETE FROM {table} WHERE {b} IN (SELECT value FROM json_each(?))"  # noqa: S608
    if only:
        sql += f" AND {only}"
    deleted = conn.execute(sql, [dumps_compact([k[1] for k in keys]), *only_params]).rowcount
    return int(deleted), (keys[-1][0], keys[-1][1]) if len(keys) == limit else None


def delete_old_events_step(
    conn: sqlite3.Connection,
    older_than_ts: float,
    *,
    after: Position | None = None,
    limit: int = 1000,
    keep_unpublished: bool = False,
) -> tuple[int, Position | None]:
    """Write op part: one step (``limit`` events looked at) of deleting events with
    ``ts < older_than_ts`` (:func:`delete_step`). With ``keep_unpublished`` (a Kafka broker is
    configured: the table is the event bus's spool) never one after the bus's cursor, read in
    this same transaction; no cursor yet keeps them all."""
    only, only_params = "", []
    if keep_unpublished:
        only = (
            "seq <= COALESCE((SELECT CAST(value AS INTEGER) FROM kv"
            " WHERE namespace = ? AND key = ?), 0)"
        )
        only_params = list(EVENT_BUS_CURSOR)
    return delete_step(
        conn,
        "events",
        ("ts", "seq"),
        "ts < ?",
        [older_than_ts],
        after=after,
        limit=limit,
        only=only,
        only_params=only_params,
    )


def delete_old_changes_step(
    conn: sqlite3.Connection,
    older_than_ts: float,
    *,
    after: Position | None = None,
    limit: int = 1000,
) -> tuple[int, Position | None]:
    """Write op part: one step (``limit`` rows looked at) of deleting change rows with
    ``ts < older_than_ts``."""
    return delete_step(
        conn, "changes", ("ts", "seq"), "ts < ?", [older_than_ts], after=after, limit=limit
    )


def run_steps(step: Callable[[Position | None], tuple[int, Position | None]]) -> int:
    """Run a chunked delete's steps to the end in the caller's transaction; the total deleted."""
    total, after = step(None)
    while after is not None:
        n, after = step(after)
        total += n
    return total


def delete_old_events(
    conn: sqlite3.Connection, older_than_ts: float, *, keep_unpublished: bool = False
) -> int:
    """Write op part: delete events with ``ts < older_than_ts`` in this one transaction (a
    small store's way; retention walks in steps: :func:`delete_old_events_step`). With
    ``keep_unpublished`` never one after the event bus's cursor. Returns the count."""
    return run_steps(
        lambda after: delete_old_events_step(
            conn,
            older_than_ts,
            after=after,
            limit=PURGE_STEP_ROWS,
            keep_unpublished=keep_unpublished,
        )
    )


def insert_events(conn: sqlite3.Connection, events: Sequence[EventRecord], now: float) -> list[int]:
    """Insert events inside a caller's write op (``timestamp == 0`` means ``now``)."""
    return _insert_many(conn, _EVENT_SQL, _event_rows(events, now))


def insert_encoded_events(
    conn: sqlite3.Connection, rows: list[tuple[str, str, str, int]]
) -> list[int]:
    """:func:`insert_events` of events already encoded: ``(event_type, resource_id, data as
    compact JSON text, ts)`` each, for a caller that builds the text itself (the scheduler's
    task events, which splice in a result it encoded once for the task's row)."""
    return _insert_many(conn, _EVENT_SQL, rows)


def _last_change_seq(conn: sqlite3.Connection, stream: str) -> int:
    row = conn.execute("SELECT MAX(seq) FROM changes WHERE stream = ?", (stream,)).fetchone()
    return int(row[0] or 0)


_Item = tuple[Callable[[sqlite3.Connection], Any], "concurrent.futures.Future[Any]"]


class StateStore:
    """SQLite-backed durable store with a group-committing writer thread.

    Write ops are callables ``op(conn) -> T`` executed on the writer connection inside an
    open transaction; they must not COMMIT or ROLLBACK themselves. Read ops run on a
    per-thread connection (``query_only``) inside one read transaction (a consistent
    snapshot).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        group_commit_max: int = 512,
        group_commit_wait_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        migrations: Mapping[int, Migration] | None = None,
    ) -> None:
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if group_commit_max < 1 or group_commit_wait_s < 0:
            raise ValueError("group_commit_max must be >= 1 and group_commit_wait_s >= 0")
        migs = dict(MIGRATIONS if migrations is None else migrations)
        if sorted(migs) != list(range(1, len(migs) + 1)):
            raise ValueError("migrations must be numbered 1..N without gaps")
        self._path = Path(path)
        self._synchronous = sync
        self._max_batch = group_commit_max
        self._wait_s = group_commit_wait_s
        self._clock = clock
        self._path.parent.mkdir(parents=True, exist_ok=True)

        self._wconn = self._connect()
        try:
            # Switching a fresh file to WAL may report "locked" at once, without the busy
            # handler, while another process does the same; so may reading its schema version.
            _retry_locked(lambda: self._wconn.execute("PRAGMA journal_mode = WAL").fetchone())
            self._schema_version = _retry_locked(lambda: self._migrate(migs))
        except BaseException:
            self._wconn.close()
            raise
        wal.tune_writer(self._wconn)
        self._checkpointer = wal.Checkpointer(self._connect)

        self._lock = threading.Lock()  # guards _closed, _queued, _read_conns and the stats
        self._wconn_lock = threading.Lock()  # held while a batch runs on (or closes) _wconn
        self._closed = False
        self._queued = 0  # ops handed to the writer thread and not yet finished
        self._read_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()  # None = stop
        # lock_waits/lock_wait_s: commits that waited for another process's write lock, and
        # how long in all; inline_busy: small writes that found it held and went to the writer
        self._stats: dict[str, float] = dict.fromkeys(
            ("commits", "ops", "failed_ops", "lock_waits", "lock_wait_s", "inline_busy"), 0
        )
        self._largest_batch = 0
        self._read_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="rayinfra-store-read"
        )
        self._writer = threading.Thread(
            target=self._writer_loop, name=f"rayinfra-store-writer:{self._path.name}", daemon=True
        )
        self._writer.start()

    # -- connections and schema ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    def _migrate(self, migs: Mapping[int, Migration]) -> int:
        conn, target = self._wconn, len(migs)
        while True:
            # Cheap check without the write lock; re-checked inside BEGIN IMMEDIATE so two
            # processes opening a fresh database never both run a migration.
            current = _user_version(conn)
            if current > target:
                raise SchemaTooNewError(
                    f"database {self._path} has schema version {current} but this rayinfra "
                    f"supports up to {target}; upgrade rayinfra"
                )
            if current == target:
                return current
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = _user_version(conn)
                if current < target:
                    migs[current + 1](conn)
                    conn.execute(f"PRAGMA user_version = {current + 1:d}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise

    @property
    def schema_version(self) -> int:
        """Schema version (``PRAGMA user_version``) of the database after migration."""
        return self._schema_version

    @property
    def path(self) -> Path:
        """Path of the database file."""
        return self._path

    # -- writes ---------------------------------------------------------------------------

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Queue write op for the writer thread; the future resolves after its COMMIT."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise StoreError("closed")
            self._queued += 1
            self._queue.put((op, fut))
        return fut

    async def awrite(self, op: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """Submit ``op`` and await its commit without blocking the event loop.

        ``inline=True`` is for small ops on a latency-sensitive path: when no earlier write is
        queued or running, the op commits right here on the caller's thread, saving the two
        thread hops (about 0.3 ms); otherwise it queues like any other. Order between ops of
        one thread is kept either way, since an op only runs inline when nothing is queued.
        """
        if inline:
            fut = self._write_inline(op)
            if fut is not None:
                return fut.result()
        return await asyncio.wrap_future(self.submit(op))

    def _write_inline(
        self, op: Callable[[sqlite3.Connection], T]
    ) -> concurrent.futures.Future[T] | None:
        """Run ``op`` as a batch of one on this thread if the writer is idle, else ``None``."""
        with self._lock:
            if self._closed or self._queued or not self._wconn_lock.acquire(blocking=False):
                return None
        try:
            try:
                if _begin_immediate(self._wconn, 0.0) is None:
                    with self._lock:
                        self._stats["inline_busy"] += 1
                    return None  # another process writes: wait on the writer thread, not here
            except sqlite3.Error:
                return None  # the writer thread reports it
            fut: concurrent.futures.Future[T] = concurrent.futures.Future()
            fut.set_running_or_notify_cancel()
            self._run_batch([(op, fut)], begun=True)
            return fut
        finally:
            self._wconn_lock.release()

    def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Submit ``op`` and block until committed; returns the op's result."""
        if threading.current_thread() is self._writer:
            raise StoreError("write() called from inside a write op (would deadlock)")
        return self.submit(op).result()

    def _writer_loop(self) -> None:
        stop = False
        try:
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                deadline = time.monotonic() + self._wait_s
                while len(batch) < self._max_batch:
                    try:  # what is queued already, else wait out group_commit_wait_s
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                live = [it for it in batch if it[1].set_running_or_notify_cancel()]
                try:
                    if live:
                        with self._wconn_lock:
                            self._run_batch(live)
                except BaseException as exc:  # never let the writer die silently
                    log.exception("state store writer batch failed")
                    for _, fut in live:
                        if not fut.done():
                            fut.set_exception(exc)
                finally:
                    with self._lock:
                        self._queued -= len(batch)
        finally:
            with self._wconn_lock:
                self._wconn.close()

    def _run_batch(self, batch: list[_Item], *, begun: bool = False) -> None:
        conn = self._wconn
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        try:
            if not begun:
                waited = _begin_immediate(conn, BUSY_TIMEOUT_S)
                if waited:
                    with self._lock:
                        self._stats["lock_waits"] += 1
                        self._stats["lock_wait_s"] += waited
            alone = len(batch) == 1  # a lone op needs no savepoint: its failure undoes the batch
            for op, fut in batch:
                if not alone:
                    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
                try:
                    value, ok = op(conn), True
                except BaseException as exc:  # noqa: BLE001 - the op's own failure: undo just this op
                    value, ok = exc, False
                if not conn.in_transaction:
                    raise StoreError(
                        "transaction ended inside a write op (ops must not COMMIT or ROLLBACK, "
                        f"or SQLite aborted it: {value!r}); the outcome of the batch is unknown"
                    )
                if not alone:
                    if not ok:
                        conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                    conn.execute(f"RELEASE {_SAVEPOINT}")
                results.append((fut, ok, value))
            conn.execute("ROLLBACK" if alone and not results[0][1] else "COMMIT")
            self._checkpointer.committed()
        except (sqlite3.Error, StoreError) as exc:  # BEGIN/SAVEPOINT/COMMIT: whole batch fails
            _rollback_quietly(conn)
            with self._lock:
                self._stats["ops"] += len(results)
                self._stats["failed_ops"] += len(batch)
            for _, fut in batch:
                fut.set_exception(self._typed(exc))
            return
        with self._lock:
            self._stats["commits"] += 1
            self._stats["ops"] += len(results)
            self._stats["failed_ops"] += sum(1 for _, ok, _ in results if not ok)
            self._largest_batch = max(self._largest_batch, len(results))
        for fut, ok, value in results:  # only now, after COMMIT returned
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(self._typed(value))

    def _typed(self, exc: BaseException) -> BaseException:
        """A full disk as :class:`StorageFullError` naming where; anything else as it is."""
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
            return StorageFullError(str(self._path.parent))
        return exc

    # -- reads ----------------------------------------------------------------------------

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            with self._lock:
                if self._closed:
                    conn.close()
                    raise StoreError("closed")
                self._read_conns.append(conn)
            self._local.conn = conn
        return conn

    def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op(conn)`` on this thread's read connection in one read transaction."""
        if self._closed:
            raise StoreError("closed")
        conn = self._read_conn()
        conn.execute("BEGIN")
        try:
            return op(conn)
        finally:
            _rollback_quietly(conn)

    async def aread(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run :meth:`read` on the store's own small read thread pool."""
        if self._closed:
            raise StoreError("closed")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, self.read, op)

    # -- events ---------------------------------------------------------------------------

    def append_events(self, events: Sequence[EventRecord]) -> concurrent.futures.Future[list[int]]:
        """Insert events (``timestamp == 0`` means now); the future yields their seqs."""
        rows = _event_rows(events, self._clock())  # serialized here: bad data fails the caller
        return self.submit(partial(_insert_many, sql=_EVENT_SQL, rows=rows))

    def events(self, **query: Unpack[EventQuery]) -> list[EventRecord]:
        """Events with ``seq > after_seq`` (and ``ts >= since_ts``), ascending by seq."""
        return [decode_event(r) for r in self.event_rows(**query)]

    def event_rows(
        self,
        *,
        after_seq: int = 0,
        since_ts: int | None = None,
        types: Collection[str] | None = None,
        limit: int = 1000,
        resource_ids: Collection[str] | None = None,
    ) -> list[RawEvent]:
        """:meth:`events` as stored (``data`` JSON text): for a caller that passes them on."""
        if limit <= 0 or any(f is not None and not f for f in (types, resource_ids)):
            return []
        sql = "SELECT seq, event_type, resource_id, data, ts FROM events WHERE seq > ?"
        params: list[Any] = [after_seq]
        if since_ts is not None:
            sql += " AND ts >= ?"
            params.append(since_ts)
        if types is not None:
            sql += " AND event_type IN (SELECT value FROM json_each(?))"
            params.append(dumps_compact(list(types)))
        if resource_ids is not None:
            sql += " AND resource_id IN (SELECT value FROM json_each(?))"
            params.append(dumps_compact(list(resource_ids)))
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)

        rows: list[RawEvent] = self.read(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    def last_event_seq(self) -> int:
        """Highest event seq ever assigned (not lowered by :meth:`purge`); 0 if none."""
        sql = "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        row = self.read(lambda conn: conn.execute(sql).fetchone())
        return int(row[0]) if row else 0

    def first_event_seq(self) -> int | None:
        """Lowest event seq still stored (``None`` when the table is empty)."""
        row = self.read(lambda conn: conn.execute("SELECT MIN(seq) FROM events").fetchone())
        return None if row[0] is None else int(row[0])

    # -- change feed rows -----------------------------------------------------------------

    def append_changes(
        self, changes: Sequence[ChangeRecord]
    ) -> concurrent.futures.Future[list[int]]:
        """Insert change rows (``ts == 0`` means now); the future yields their seqs."""
        now = float(self._clock())
        rows = [(c.stream, c.key, c.kind, dumps_compact(c.data), c.ts or now) for c in changes]
        return self.submit(partial(_insert_many, sql=_CHANGE_SQL, rows=rows))

    def changes(
        self,
        stream: str,
        *,
        after_seq: int = 0,
        keys: Collection[str] | None = None,
        limit: int = 1000,
    ) -> list[ChangeRecord]:
        """Changes of ``stream`` with ``seq > after_seq`` (optionally only ``keys``)."""
        return self.read(lambda conn: _select_changes(conn, stream, after_seq, keys, limit))

    def last_change_seq(self, stream: str) -> int:
        """Highest seq currently stored for ``stream``; 0 if it has no rows."""
        return self.read(lambda conn: _last_change_seq(conn, stream))

    # -- kv -------------------------------------------------------------------------------

    def kv_put(self, namespace: str, key: str, value: Any) -> concurrent.futures.Future[None]:
        """Upsert a JSON-serialisable value."""
        row = (namespace, key, dumps_compact(value), float(self._clock()))

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO kv (namespace, key, value, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET "
                "value = excluded.value, updated = excluded.updated",
                row,
            )

        return self.submit(op)

    def kv_get(self, namespace: str, key: str, default: Any = None) -> Any:
        """Return the stored value, or ``default`` if absent."""
        sql = "SELECT value FROM kv WHERE namespace = ? AND key = ?"
        row = self.read(lambda conn: conn.execute(sql, (namespace, key)).fetchone())
        return default if row is None else json.loads(row[0])

    def kv_items(self, namespace: str) -> dict[str, Any]:
        """Every ``key -> value`` of ``namespace``."""
        sql = "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key"
        rows = self.read(lambda conn: conn.execute(sql, (namespace,)).fetchall())
        return {k: json.loads(v) for k, v in rows}

    # -- retention / lifecycle ------------------------------------------------------------

    def purge(
        self,
        older_than_ts: float,
        *,
        keep_unpublished: bool = False,
        chunk_rows: int = PURGE_STEP_ROWS,
    ) -> concurrent.futures.Future[dict[str, int]]:
        """Delete events and changes with ``ts < older_than_ts``; yields counts per table.
        ``keep_unpublished``: no event after the event bus's cursor (:func:`delete_old_events`).
        Runs in steps of ``chunk_rows`` rows, each its own write op: other writes commit in
        between, so a purge of millions of rows never holds the writer for long."""
        steps: list[tuple[str, Callable[..., StepResult]]] = [
            ("events", partial(delete_old_events_step, keep_unpublished=keep_unpublished)),
            ("changes", delete_old_changes_step),
        ]
        return self.submit_steps(
            [
                (kind, partial(fn, older_than_ts=older_than_ts, limit=chunk_rows))
                for kind, fn in steps
            ]
        )

    def submit_steps(
        self, steps: Sequence[tuple[str, Callable[..., StepResult]]]
    ) -> concurrent.futures.Future[dict[str, int]]:
        """Run chunked deletes one after the other, each step its own write op queued once the
        previous one committed (so writes queued meanwhile go first). A step is called as
        ``step(conn, after=position)`` and returns ``(deleted, next position | None)``
        (:func:`delete_step`); the future yields the total deleted per name."""
        out: concurrent.futures.Future[dict[str, int]] = concurrent.futures.Future()
        counts = dict.fromkeys((name for name, _ in steps), 0)

        def advance(
            i: int, fut: concurrent.futures.Future[StepResult]
        ) -> tuple[int, Position | None] | None:
            """Count a finished step; where to go next (``None``: failed, ``out`` says so)."""
            exc = fut.exception()
            if exc is not None:
                out.set_exception(exc)
                return None
            n, nxt = fut.result()
            counts[steps[i][0]] += n
            return (i, nxt) if nxt is not None else (i + 1, None)

        def run(i: int, after: Position | None) -> None:
            while i < len(steps):
                try:
                    fut: concurrent.futures.Future[StepResult] = self.submit(
                        partial(steps[i][1], after=after)
                    )
                except StoreError as e:
                    out.set_exception(e)
                    return
                if not fut.done():  # the usual case: continue from the writer's thread
                    fut.add_done_callback(partial(on_done, i))
                    return
                nxt = advance(i, fut)  # done already: loop here rather than recurse
                if nxt is None:
                    return
                i, after = nxt
            out.set_result(counts)

        def on_done(i: int, fut: concurrent.futures.Future[StepResult]) -> None:
            nxt = advance(i, fut)
            if nxt is not None:
                run(*nxt)

        run(0, None)
        return out

    def stats(self) -> dict[str, int | float]:
        """Counters: commits, ops (executed), failed_ops, lock_waits and lock_wait_s (commits
        that waited for another process's write lock, seconds in all), inline_busy, largest_batch,
        queued, and the WAL checkpoints' (:meth:`rayinfra.wal.Checkpointer.stats`)."""
        with self._lock:
            out: dict[str, int | float] = dict(self._stats)
            out["largest_batch"] = self._largest_batch
        out["queued"] = self._queue.qsize()
        return out | self._checkpointer.stats()

    def close(self, timeout: float = 10.0) -> None:
        """Drain queued writes, stop the writer and close all connections (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if threading.current_thread() is not self._writer:
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.warning("state store writer did not stop within %.1fs", timeout)
        self._checkpointer.close(timeout)
        self._read_pool.shutdown(wait=True)
        with self._lock:
            conns, self._read_conns = self._read_conns, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SeqNotifier:
    """asyncio helper for sequence-numbered long-polls, created inside a running loop.

    Not thread-safe: call :meth:`advance` from the loop's thread.
    """

    def __init__(self, initial: int = 0) -> None:
        self._latest = initial
        self._event = asyncio.Event()

    @property
    def latest(self) -> int:
        """Highest seq recorded so far."""
        return self._latest

    def advance(self, seq: int) -> None:
        """Record ``seq`` as the new highest seq and wake waiters (lower seqs are ignored)."""
        if seq > self._latest:
            self._latest = seq
            self._event.set()
            self._event = asyncio.Event()

    async def wait_beyond(
        self,
        seq: int,
        timeout_s: float,
        *,
        poll_interval_s: float | None = None,
        poll: Callable[[], Awaitable[int]] | None = None,
    ) -> int:
        """Wait until ``latest > seq`` or ``timeout_s`` passes; return ``latest``.

        ``poll`` (awaited once at the start and then every ``poll_interval_s``, default
        0.5 s) picks up seqs written by other processes. A timeout is not an error.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        interval = 0.5 if poll_interval_s is None else max(poll_interval_s, 0.001)
        if poll is not None and self._latest <= seq:
            self.advance(await poll())
        while self._latest <= seq:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            step = remaining if poll is None else min(remaining, interval)
            try:
                await asyncio.wait_for(self._event.wait(), step)
            except asyncio.TimeoutError:
                if poll is not None:
                    self.advance(await poll())
        return self._latest


READER_POLL_S = 0.2


class ChangeFeed:
    """A durable, sequence-numbered long-poll feed owned by one actor: ``(seq, changes)``.

    ``reader=True`` follows a stream another process publishes (it polls the store for new
    commits every :data:`READER_POLL_S` while waiting).
    """

    def __init__(self, store: StateStore, stream: str, *, reader: bool = False) -> None:
        self._store = store
        self._stream = stream
        self._notifier = SeqNotifier(store.last_change_seq(stream))
        self._reader = reader

    @property
    def stream(self) -> str:
        """Name of the stream this feed owns."""
        return self._stream

    @property
    def latest(self) -> int:
        """Highest seq published (or found in the store at start-up)."""
        return self._notifier.latest

    async def publish(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> int:
        """Persist ``(key, kind, data)`` items, wake waiters and return the last seq."""
        if not items:
            return self._notifier.latest
        records = [ChangeRecord(0, self._stream, k, kind, d, 0.0) for k, kind, d in items]
        seqs = await asyncio.wrap_future(self._store.append_changes(records))
        self._notifier.advance(seqs[-1])
        return seqs[-1]

    async def wait(
        self,
        after_seq: int,
        *,
        keys: Collection[str] | None = None,
        timeout_s: float = 30.0,
        limit: int = 1000,
    ) -> tuple[int, list[ChangeRecord]]:
        """Return changes with ``seq > after_seq`` as soon as any exist, waiting up to
        ``timeout_s``. The returned seq is that of the last returned change or, when none
        matched, the latest seq scanned (so key-filtered callers do not re-scan). An
        ``after_seq`` beyond the feed's latest (e.g. the db was reset) is treated as latest.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        cursor = min(after_seq, self._notifier.latest)
        while True:
            # Everything <= known is committed, so after an empty scan we may skip to it.
            known = self._notifier.latest
            scan = partial(
                _select_changes, stream=self._stream, after_seq=cursor, keys=keys, limit=limit
            )
            rows = await self._store.aread(scan)
            if rows:
                return rows[-1].seq, rows
            cursor = max(cursor, known)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return cursor, []
            poll = None
            if self._reader:  # another process publishes: look for its commits
                poll = partial(asyncio.to_thread, self._store.last_change_seq, self._stream)
            await self._notifier.wait_beyond(
                cursor, remaining, poll_interval_s=READER_POLL_S, poll=poll
            )


__getattr__ = renamed(__name__, {"SchemaTooNew": "SchemaTooNewError"})

"""Unit tests for rayinfra.store (SQLite state store, group commit, change feeds)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayinfra.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChangeFeed,
    ChangeRecord,
    EventRecord,
    Migration,
    SchemaTooNewError,
    SeqNotifier,
    StateStore,
    StoreError,
    execute_values,
)


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "state.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    s = StateStore(db_path)
    yield s
    s.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=10)


def insert_kv(key: str, value: str = "1") -> Any:
    def op(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO kv VALUES ('t', ?, ?, 0)", (key, value))
        return key

    return op


def count(path: Path, table: str) -> int:
    with raw(path) as c:
        return int(c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def block_writer(s: StateStore) -> tuple[threading.Event, concurrent.futures.Future[None]]:
    """Submit an op that parks the writer thread until the returned event is set."""
    gate, entered = threading.Event(), threading.Event()

    def op(conn: sqlite3.Connection) -> None:
        entered.set()
        assert gate.wait(5)

    fut = s.submit(op)
    assert entered.wait(5)
    return gate, fut


def ev(kind: str, rid: str = "r", ts: int = 0, **data: Any) -> EventRecord:
    return EventRecord(0, kind, rid, dict(data), ts)


# -- schema / migrations ------------------------------------------------------------------


def test_fresh_db_is_migrated_and_in_wal_mode(db_path: Path) -> None:
    calls: list[int] = []

    def v1(conn: sqlite3.Connection) -> None:
        calls.append(1)
        MIGRATIONS[1](conn)

    with StateStore(db_path, migrations={**MIGRATIONS, 1: v1}) as s:
        assert s.schema_version == SCHEMA_VERSION == 5
    with raw(db_path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"events", "changes", "kv", "tasks"} <= tables
    with StateStore(db_path, migrations={**MIGRATIONS, 1: v1}) as s:
        assert s.schema_version == SCHEMA_VERSION
    assert calls == [1]  # reopening did not re-migrate


def test_schema_too_new(db_path: Path) -> None:
    StateStore(db_path).close()
    with raw(db_path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNewError) as info:
        StateStore(db_path)
    msg = str(info.value)
    assert str(SCHEMA_VERSION + 1) in msg and str(SCHEMA_VERSION) in msg
    assert "upgrade rayinfra" in msg


def test_later_migration_applies_forward_and_keeps_rows(db_path: Path) -> None:
    with StateStore(db_path) as s:
        s.append_events([ev("a", x=1)]).result()

    def add_col(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE events ADD COLUMN note TEXT DEFAULT 'n'")

    migs: dict[int, Migration] = {**MIGRATIONS, SCHEMA_VERSION + 1: add_col}
    with StateStore(db_path, migrations=migs) as s:
        assert s.schema_version == SCHEMA_VERSION + 1
        assert [e.data for e in s.events()] == [{"x": 1}]
        assert s.read(lambda c: c.execute("SELECT note FROM events").fetchall()) == [("n",)]
    with pytest.raises(SchemaTooNewError):  # old code refuses the newer db
        StateStore(db_path)


def test_failing_migration_rolls_back(db_path: Path) -> None:
    StateStore(db_path).close()

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE events ADD COLUMN note TEXT")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        StateStore(db_path, migrations={**MIGRATIONS, SCHEMA_VERSION + 1: bad})
    with raw(db_path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        cols = [r[1] for r in c.execute("PRAGMA table_info(events)")]
    assert "note" not in cols


def test_concurrent_fresh_open_migrates_once(db_path: Path) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(4)

    def v1(conn: sqlite3.Connection) -> None:
        calls.append(1)
        time.sleep(0.05)  # widen the race window
        MIGRATIONS[1](conn)

    def open_store() -> int:
        barrier.wait()
        with StateStore(db_path, migrations={**MIGRATIONS, 1: v1}) as s:
            return s.schema_version

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: open_store(), range(4)))
    assert versions == [SCHEMA_VERSION] * 4
    assert calls == [1]


# -- writer / group commit ----------------------------------------------------------------


def test_group_commit_batches_ops_from_many_threads(store: StateStore) -> None:
    gate, blocker = block_writer(store)

    def submit_50(t: int) -> list[concurrent.futures.Future[str]]:
        return [store.submit(insert_kv(f"{t}-{i}")) for i in range(50)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futs = [f for fs in pool.map(submit_50, range(4)) for f in fs]
    assert store.stats()["queued"] == 200
    gate.set()
    assert sorted(f.result(5) for f in futs) == sorted(
        f"{t}-{i}" for t in range(4) for i in range(50)
    )
    blocker.result(5)
    st = store.stats()
    assert st["ops"] == 201
    assert st["commits"] == 2
    assert st["largest_batch"] == 200
    assert count(store.path, "kv") == 200


def test_group_commit_max_caps_batches(db_path: Path) -> None:
    with StateStore(db_path, group_commit_max=10) as s:
        gate, _ = block_writer(s)
        futs = [s.submit(insert_kv(str(i))) for i in range(25)]
        gate.set()
        concurrent.futures.wait(futs, 5)
        assert s.stats()["largest_batch"] == 10
        assert s.stats()["commits"] == 4  # blocker + 10 + 10 + 5


def test_group_commit_wait_collects_late_ops(db_path: Path) -> None:
    with StateStore(db_path, group_commit_wait_s=0.2) as s:
        f1 = s.submit(insert_kv("a"))
        time.sleep(0.02)  # the writer is still waiting for more work
        f2 = s.submit(insert_kv("b"))
        assert (f1.result(5), f2.result(5)) == ("a", "b")
        assert (s.stats()["commits"], s.stats()["largest_batch"]) == (1, 2)


def test_failing_op_rolled_back_alone(store: StateStore) -> None:
    gate, _ = block_writer(store)

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv VALUES ('t', 'bad', '1', 0)")
        raise KeyError("nope")

    f1, f2, f3 = store.submit(insert_kv("a")), store.submit(bad), store.submit(insert_kv("b"))
    gate.set()
    assert f1.result(5) == "a" and f3.result(5) == "b"
    with pytest.raises(KeyError, match="nope"):
        f2.result(5)
    assert store.stats()["largest_batch"] == 3  # really one transaction
    with raw(store.path) as c:
        assert sorted(r[0] for r in c.execute("SELECT key FROM kv")) == ["a", "b"]


def test_op_that_commits_itself_is_rejected(store: StateStore) -> None:
    def rogue(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    with pytest.raises(StoreError, match="must not COMMIT"):
        store.write(rogue)
    assert store.write(insert_kv("after")) == "after"  # writer still healthy


def test_future_resolves_only_after_commit(store: StateStore) -> None:
    seen: list[bool] = []
    done = threading.Event()

    def check(f: concurrent.futures.Future[str]) -> None:
        with raw(store.path) as c:  # runs right when the future resolves
            seen.append(c.execute("SELECT 1 FROM kv WHERE key='k'").fetchone() is not None)
        done.set()

    store.submit(insert_kv("k")).add_done_callback(check)
    assert done.wait(5)
    assert seen == [True]


def test_cancelled_future_op_is_skipped(store: StateStore) -> None:
    gate, _ = block_writer(store)
    f = store.submit(insert_kv("cancelled"))
    assert f.cancel()
    gate.set()
    store.write(insert_kv("after"))
    assert store.kv_get("t", "cancelled") is None
    assert store.kv_get("t", "after") == 1


async def test_awrite_and_aread(store: StateStore) -> None:
    assert await store.awrite(insert_kv("x", "[1, 2]")) == "x"
    assert await store.aread(lambda c: c.execute("SELECT value FROM kv").fetchone()[0]) == "[1, 2]"
    with pytest.raises(sqlite3.OperationalError):  # read connections are query_only
        await store.aread(lambda c: c.execute("DELETE FROM kv"))


async def test_inline_awrite_commits_on_the_callers_thread_when_idle(store: StateStore) -> None:
    def where(conn: sqlite3.Connection) -> str:
        insert_kv(threading.current_thread().name)(conn)
        return threading.current_thread().name

    assert await store.awrite(where, inline=True) == threading.current_thread().name
    assert store.kv_get("t", threading.current_thread().name) == 1
    assert (await store.awrite(where)).startswith("rayinfra-store-writer")


async def test_inline_awrite_queues_behind_earlier_writes(store: StateStore) -> None:
    gate, _ = block_writer(store)
    queued = store.submit(insert_kv("first"))
    order: list[str] = []

    def second(conn: sqlite3.Connection) -> str:
        order.append("second")
        # the earlier op committed first: order between ops is kept
        return str(conn.execute("SELECT count(*) FROM kv WHERE key='first'").fetchone()[0])

    task = asyncio.ensure_future(store.awrite(second, inline=True))
    await asyncio.sleep(0.05)
    assert not task.done() and order == []  # did not jump the queue
    gate.set()
    assert await asyncio.wait_for(task, 5) == "1"
    queued.result(5)


async def test_inline_failing_op_rolls_back_and_raises(store: StateStore) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        insert_kv("half")(conn)
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.awrite(bad, inline=True)
    assert store.kv_get("t", "half") is None
    assert await store.awrite(insert_kv("ok"), inline=True) == "ok"
    store.close()
    with pytest.raises(StoreError):
        await store.awrite(insert_kv("late"), inline=True)


async def test_inline_awrite_never_waits_for_another_process_lock(
    store: StateStore, db_path: Path
) -> None:
    """Another connection (as another process would) holds the write lock: the inline op is
    handed to the writer thread, so the caller's event loop keeps running, and commits as soon
    as the lock is released."""
    other = raw(db_path)
    other.isolation_level = None
    other.execute("BEGIN IMMEDIATE")

    def where(conn: sqlite3.Connection) -> str:
        insert_kv("waited")(conn)
        return threading.current_thread().name

    task = asyncio.ensure_future(store.awrite(where, inline=True))
    ticks = 0
    for _ in range(10):  # the loop is free while the op waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10 and not task.done()
    other.execute("COMMIT")
    other.close()
    assert (await asyncio.wait_for(task, 5)).startswith("rayinfra-store-writer")
    assert store.kv_get("t", "waited") == 1
    st = store.stats()
    assert st["inline_busy"] == 1 and st["lock_waits"] == 1 and st["lock_wait_s"] >= 0.09


def test_a_write_waits_for_another_process_lock_then_commits(
    store: StateStore, db_path: Path
) -> None:
    other = raw(db_path)
    other.isolation_level = None
    other.execute("BEGIN IMMEDIATE")
    assert store.stats()["lock_waits"] == 0
    fut = store.submit(insert_kv("after"))
    time.sleep(0.05)
    assert not fut.done()
    other.execute("COMMIT")
    other.close()
    assert fut.result(5) == "after"
    st = store.stats()  # counted: the commit that waited, and how long
    assert st["lock_waits"] == 1 and 0.04 <= st["lock_wait_s"] < 5, st


def test_two_instances_write_concurrently(db_path: Path) -> None:
    a, b = StateStore(db_path), StateStore(db_path)
    try:

        def work(s: StateStore, tag: str) -> None:
            for i in range(50):
                s.write(insert_kv(f"{tag}-{i}"))
                s.append_events([ev("e", tag)]).result()

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futs = [
                pool.submit(work, s, f"{n}{t}") for n, s in (("a", a), ("b", b)) for t in range(3)
            ]
            for f in futs:
                f.result(30)  # any "database is locked" would surface here
    finally:
        a.close()
        b.close()
    assert count(db_path, "kv") == 300
    assert count(db_path, "events") == 300


# -- events ---------------------------------------------------------------------------------


def test_events_filters(db_path: Path) -> None:
    clock = FakeClock(100)
    with StateStore(db_path, clock=clock) as s:
        seqs = s.append_events([ev("a", n=1), ev("b", n=2)]).result()
        clock.now = 200
        seqs += s.append_events([ev("a", n=3), ev("c", n=4, ts=150)]).result()
        assert seqs == [1, 2, 3, 4]
        assert s.last_event_seq() == 4
        all_ = s.events()
        assert [e.seq for e in all_] == seqs
        assert [e.timestamp for e in all_] == [100, 100, 200, 150]
        assert all_[0] == EventRecord(1, "a", "r", {"n": 1}, 100)
        assert [e.seq for e in s.events(types={"a"})] == [1, 3]
        assert [e.seq for e in s.events(types=["a", "c"], after_seq=1)] == [3, 4]
        assert s.events(types=[]) == []
        assert [e.seq for e in s.events(since_ts=150)] == [3, 4]  # inclusive
        assert [e.seq for e in s.events(since_ts=151)] == [3]
        assert [e.seq for e in s.events(limit=2)] == [1, 2]
        assert [e.seq for e in s.events(after_seq=2, limit=1)] == [3]


def test_event_seq_survives_reopen_and_purge(db_path: Path) -> None:
    with StateStore(db_path) as s:
        assert s.append_events([ev("a"), ev("a")]).result() == [1, 2]
    with StateStore(db_path) as s:
        assert s.last_event_seq() == 2
        assert s.append_events([ev("a")]).result() == [3]
        assert s.purge(float("inf")).result()["events"] == 3
        assert s.events() == []
        assert s.last_event_seq() == 3  # highest ever assigned, not lowered by purge
    with StateStore(db_path) as s:
        assert s.append_events([ev("a")]).result() == [4]  # AUTOINCREMENT never reuses


def test_purge_by_fake_clock(db_path: Path) -> None:
    clock = FakeClock(1_000)
    with StateStore(db_path, clock=clock) as s:
        s.append_events([ev("old"), ev("old")]).result()
        s.append_changes([ChangeRecord(0, "st", "k", "state", {}, 0.0)]).result()
        clock.now = 2_000
        s.append_events([ev("new")]).result()
        s.append_changes([ChangeRecord(0, "st", "k", "state", {"v": 2}, 0.0)]).result()
        s.kv_put("ns", "k", 1).result()
        assert s.purge(1_500).result() == {"events": 2, "changes": 1}
        assert [e.event_type for e in s.events()] == ["new"]
        assert [c.data for c in s.changes("st")] == [{"v": 2}]
        assert s.kv_get("ns", "k") == 1  # kv is not subject to retention
        assert s.purge(2_000).result() == {"events": 0, "changes": 0}  # strictly older


# -- kv / lifecycle -------------------------------------------------------------------------


def test_kv_roundtrip(db_path: Path) -> None:
    with StateStore(db_path) as s:
        assert s.kv_get("ns", "k", default="d") == "d"
        s.kv_put("ns", "k", {"restarts": 1}).result()
        s.kv_put("ns", "k", {"restarts": 2}).result()
        s.kv_put("other", "k", [1]).result()
        assert s.kv_get("ns", "k") == {"restarts": 2}
    with StateStore(db_path) as s:
        assert s.kv_get("ns", "k") == {"restarts": 2}
        assert s.kv_get("other", "k") == [1]


def test_close_drains_then_rejects(store: StateStore) -> None:
    gate, _ = block_writer(store)
    futs = [store.submit(insert_kv(str(i))) for i in range(10)]
    closer = threading.Thread(target=store.close)
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(5)
    assert not closer.is_alive()
    assert all(f.done() and f.exception() is None for f in futs)
    assert count(store.path, "kv") == 10
    with pytest.raises(StoreError, match="closed"):
        store.submit(insert_kv("late"))
    with pytest.raises(StoreError, match="closed"):
        store.kv_get("t", "0")
    store.close()  # idempotent


# -- SeqNotifier / ChangeFeed ---------------------------------------------------------------


async def test_seq_notifier_basics() -> None:
    n = SeqNotifier(5)
    assert await n.wait_beyond(4, 1.0) == 5  # already beyond: immediate
    n.advance(3)
    assert n.latest == 5  # lower seqs ignored
    t0 = time.monotonic()
    assert await n.wait_beyond(5, 0.05) == 5  # timeout is not an error
    assert time.monotonic() - t0 >= 0.04
    task = asyncio.create_task(n.wait_beyond(5, 5.0))
    await asyncio.sleep(0.01)
    assert not task.done()
    n.advance(7)
    assert await asyncio.wait_for(task, 1.0) == 7


async def test_seq_notifier_poll_sees_other_instance(db_path: Path) -> None:
    a, b = StateStore(db_path), StateStore(db_path)
    try:
        n = SeqNotifier(a.last_change_seq("s"))
        polls = 0

        async def poll() -> int:
            nonlocal polls
            polls += 1
            return await a.aread(
                lambda c: int(c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])
            )

        task = asyncio.create_task(n.wait_beyond(0, 5.0, poll_interval_s=0.02, poll=poll))
        await asyncio.sleep(0.05)
        assert not task.done()
        t0 = time.monotonic()
        await asyncio.wrap_future(b.append_changes([ChangeRecord(0, "s", "k", "x", {}, 0.0)]))
        assert await asyncio.wait_for(task, 2.0) == 1
        assert time.monotonic() - t0 < 1.0
        assert polls >= 2
    finally:
        a.close()
        b.close()


async def test_feed_backlog_returns_immediately(store: StateStore) -> None:
    feed = ChangeFeed(store, "sched")
    assert feed.latest == 0
    last = await feed.publish([("t1", "state", {"s": "RUNNING"}), ("t2", "state", {"s": "DONE"})])
    assert last == 2 == feed.latest
    t0 = time.monotonic()
    seq, rows = await feed.wait(0, timeout_s=5.0)
    assert time.monotonic() - t0 < 1.0
    assert seq == 2
    assert [(r.key, r.kind, r.data) for r in rows] == [
        ("t1", "state", {"s": "RUNNING"}),
        ("t2", "state", {"s": "DONE"}),
    ]
    assert all(r.stream == "sched" for r in rows)
    seq, rows = await feed.wait(0, limit=1, timeout_s=0)
    assert (seq, [r.key for r in rows]) == (1, ["t1"])


async def test_feed_blocks_then_wakes_on_publish(store: StateStore) -> None:
    feed = ChangeFeed(store, "sched")
    task = asyncio.create_task(feed.wait(0, timeout_s=10.0))
    await asyncio.sleep(0.05)
    assert not task.done()
    t0 = time.monotonic()
    await feed.publish([("t1", "state", {})])
    seq, rows = await asyncio.wait_for(task, 2.0)
    assert time.monotonic() - t0 < 1.0  # woken, not timed out
    assert seq == 1 and [r.key for r in rows] == ["t1"]


async def test_feed_timeout_and_future_seq(store: StateStore) -> None:
    feed = ChangeFeed(store, "sched")
    await feed.publish([("t1", "state", {})])
    t0 = time.monotonic()
    assert await feed.wait(1, timeout_s=0.05) == (1, [])
    assert time.monotonic() - t0 >= 0.04
    assert await feed.wait(99, timeout_s=0) == (1, [])  # caller from the future -> latest


async def test_feed_keys_filter(store: StateStore) -> None:
    feed = ChangeFeed(store, "sched")
    other = ChangeFeed(store, "other")
    await feed.publish([("a", "state", {"n": 1}), ("b", "state", {"n": 2})])
    await other.publish([("a", "state", {"n": 99})])  # other streams are invisible
    await feed.publish([("a", "state", {"n": 3})])
    seq, rows = await feed.wait(0, keys={"a"}, timeout_s=0)
    assert seq == 4 and [r.data["n"] for r in rows] == [1, 3]
    # nothing matches: returned seq skips what was scanned so the caller does not re-scan
    seq, rows = await feed.wait(0, keys=["zzz"], timeout_s=0.02)
    assert (seq, rows) == (4, [])
    task = asyncio.create_task(feed.wait(seq, keys=["c"], timeout_s=5.0))
    await feed.publish([("b", "state", {})])  # non-matching: keeps waiting
    await asyncio.sleep(0.05)
    assert not task.done()
    await feed.publish([("c", "state", {"n": 7})])
    seq, rows = await asyncio.wait_for(task, 2.0)
    assert seq == 6 and [r.data for r in rows] == [{"n": 7}]


async def test_a_reader_feed_wakes_for_another_process_publishing(db_path: Path) -> None:
    owner_store, reader_store = StateStore(db_path), StateStore(db_path)
    try:
        owner = ChangeFeed(owner_store, "health_checker")
        reader = ChangeFeed(reader_store, "health_checker", reader=True)
        start = reader.latest
        waiting = asyncio.ensure_future(reader.wait(start, timeout_s=20.0))
        await asyncio.sleep(0.3)
        await owner.publish([("redis", "probe", {"healthy": True})])
        t0 = time.monotonic()
        seq, items = await asyncio.wait_for(waiting, 5.0)  # not the 20 s timeout
        assert [i.key for i in items] == ["redis"] and seq > start
        assert time.monotonic() - t0 < 5.0
    finally:
        owner_store.close()
        reader_store.close()


async def test_feed_resume_after_restart(db_path: Path) -> None:
    s1 = StateStore(db_path)
    feed = ChangeFeed(s1, "sched")
    seen = await feed.publish([("t1", "state", {}), ("t2", "state", {})])
    await feed.publish([("t3", "state", {"after": True})])
    s1.close()

    s2 = StateStore(db_path)
    try:
        feed2 = ChangeFeed(s2, "sched")
        assert feed2.latest == 3
        seq, rows = await feed2.wait(seen, timeout_s=1.0)
        assert seq == 3 and [r.key for r in rows] == ["t3"]
        assert await feed2.wait(3, timeout_s=0.02) == (3, [])
        assert await feed2.publish([("t4", "state", {})]) == 4
    finally:
        s2.close()


def test_v1_database_migrates_forward_to_current(tmp_path: Path) -> None:
    """A database written by the v1 code (events only) gains the tasks table and keeps its rows."""
    db_path = tmp_path / "v1.db"
    with StateStore(db_path, migrations={1: MIGRATIONS[1]}) as old:
        old.append_events(
            [EventRecord(0, "task_submitted", "t1", {"class": "cpu_short"}, 5)]
        ).result()
        assert old.schema_version == 1
    with StateStore(db_path) as new:
        assert new.schema_version == SCHEMA_VERSION
        assert [e.resource_id for e in new.events()] == ["t1"]
        assert new.read(lambda c: c.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]) == 0


@pytest.mark.parametrize("n", [0, 1, 2, 7, 63, 64, 65, 128, 200, 256, 300])
def test_execute_values_writes_what_executemany_would(tmp_path: Path, n: int) -> None:
    """Multi-row statements, chunked as 64s then powers of two: every row lands once, in
    order, with the values and types a row-at-a-time ``executemany`` gives, and an UPDATE
    through ``FROM (VALUES ...)`` changes exactly the rows it names."""
    rows = [(f"k{i}", i, i / 3, None if i % 2 else f"t{i}", b"\x00" * (i % 3)) for i in range(n)]
    conns = []
    for name in ("many", "values"):
        conn = sqlite3.connect(tmp_path / f"{name}.db", isolation_level=None)
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB)")
        conns.append(conn)
    many, values = conns
    many.executemany("INSERT INTO t VALUES (?,?,?,?,?)", rows)
    execute_values(values, "INSERT INTO t VALUES {values}", rows)
    changed = [(f"new{i}", -i, f"k{i}") for i in range(0, n, 3)]
    many.executemany("UPDATE t SET s=?, i=? WHERE k=?", changed)
    execute_values(
        values,
        "UPDATE t SET s=v.column1, i=v.column2 FROM (VALUES {values}) AS v WHERE t.k = v.column3",
        changed,
    )
    select = "SELECT rowid, k, i, f, s, b, typeof(i), typeof(f), typeof(s) FROM t ORDER BY rowid"
    got = values.execute(select).fetchall()
    assert got == many.execute(select).fetchall()
    assert len(got) == n

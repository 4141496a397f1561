"""Task listing and counting at scale, on a real state store: keyset pages (every task exactly
once, newest first, stable while tasks come and go), each shape answered by one index walk
(EXPLAIN QUERY PLAN), and the status path's counts cached so a status call never waits for a
count."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from rayinfra import taskstore
from rayinfra.errors import InvalidArgumentError
from rayinfra.models import TaskStatus, decode_list_cursor, encode_list_cursor
from rayinfra.scheduling.tasks import TaskSpec
from rayinfra.store import MIGRATIONS, StateStore
from rayinfra.taskstore import TaskRow, Transition

CLASSES = ("cpu_short", "gpu_short", "cpu_long")


def row(tid: str, at: float, cls: str = "cpu_short", status: str = "pending") -> TaskRow:
    spec = TaskSpec(task_id=tid, task_class=cls, payload={"type": "noop"})
    return TaskRow(
        spec=spec, identity=spec.identity(), trusted=True, status=status, submitted_at=at
    )


def fill(s: StateStore, n: int, *, same_time_every: int = 7) -> list[TaskRow]:
    """``n`` tasks over three classes; batches of ``same_time_every`` share a submitted_at (a
    batch submit stamps all its tasks alike), so pages must break ties by id."""
    rows = [row(f"t{i:04d}", 1_000.0 + i // same_time_every, CLASSES[i % 3]) for i in range(n)]
    s.write(lambda c: taskstore.insert_new(c, rows, 1_000.0))
    return rows


def finish(s: StateStore, rows: list[TaskRow], status: str, at: float) -> None:
    for r in rows:
        r.status, r.started_at, r.finished_at = status, at - 1, at
    event = {"completed": "task_completed", "failed": "task_failed"}.get(status, "task_cancelled")
    s.write(lambda c: taskstore.apply_transitions(c, [Transition(r, event) for r in rows], at))


def newest_first(rows: list[TaskRow]) -> list[str]:
    return [
        r.task_id for r in sorted(rows, key=lambda r: (r.submitted_at, r.task_id), reverse=True)
    ]


def walk(s: StateStore, limit: int, **filters: str | None) -> tuple[list[str], int]:
    """Every page of a listing: the ids in order and how many pages it took."""
    out: list[str] = []
    after, pages = None, 0
    while True:
        got = s.read(
            lambda c, a=after: taskstore.list_task_page(
                c, filters.get("status"), filters.get("task_class"), limit + 1, a
            )
        )
        page = got[:limit]
        out += [r.task_id for r, _ in page]
        pages += 1
        if len(got) <= limit:
            return out, pages
        after = page[-1][1]


def test_pages_cover_every_task_once_newest_first(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        rows = fill(s, 250)
        ids, pages = walk(s, 40)
        assert ids == newest_first(rows) and pages == 7
        # one page bigger than everything: no cursor needed
        assert walk(s, 1000) == (newest_first(rows), 1)


def test_filtered_pages(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        rows = fill(s, 300)
        done = rows[::4]
        finish(s, done, "completed", 5_000.0)
        pending = [r for r in rows if r not in done]
        by_class = {c: [r for r in rows if r.spec.task_class == c] for c in CLASSES}

        assert walk(s, 17, status="completed")[0] == newest_first(done)
        assert walk(s, 17, status="pending")[0] == newest_first(pending)
        # a class alone: its index is (class, status, ...); the states' walks are merged
        assert walk(s, 13, task_class="gpu_short")[0] == newest_first(by_class["gpu_short"])
        both = [r for r in done if r.spec.task_class == "cpu_long"]
        assert walk(s, 5, status="completed", task_class="cpu_long")[0] == newest_first(both)
        assert walk(s, 5, status="failed")[0] == []
        assert walk(s, 5, task_class="nope")[0] == []


def test_a_cursor_stays_valid_while_tasks_come_and_go(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        rows = fill(s, 100)
        first = s.read(lambda c: taskstore.list_task_page(c, None, None, 30))
        after = first[-1][1]
        # newer tasks arrive and some older ones are purged: the next page neither repeats
        # nor skips what is still there
        newer = [row(f"n{i}", 9_000.0) for i in range(20)]
        s.write(lambda c: taskstore.insert_new(c, newer, 9_000.0))
        gone = {r.task_id for r in rows[:10]}
        finish(s, rows[:10], "completed", 1_500.0)
        s.write(lambda c: taskstore.purge_finished(c, 2_000.0))
        rest = [
            r for r, _ in s.read(lambda c: taskstore.list_task_page(c, None, None, 1000, after))
        ]
        expect = [t for t in newest_first(rows)[30:] if t not in gone]
        assert [r.task_id for r in rest] == expect


def test_cursor_round_trip_and_bad_cursors() -> None:
    for at, pos in ((1_712_345_678.123_456_7, 12), (0.1, 0), (1e-300, 2**62)):
        assert decode_list_cursor(encode_list_cursor(at, pos)) == (at, pos)
    for bad in ("", "nocolon", "abc:1", "nan:1", "inf:1", "1e999:1", "1.5:x", "1.5:-1", "1.5:"):
        with pytest.raises(InvalidArgumentError) as e:
            decode_list_cursor(bad)
        assert e.value.field == "after"


PLAN_SHAPES = {
    "all": ("", []),
    "status": ("status = ?", ["pending"]),
    "class+status": ("class = ? AND status = ?", ["cpu_short", "pending"]),
}


@pytest.mark.parametrize("shape", sorted(PLAN_SHAPES))
@pytest.mark.parametrize("keyset", [False, True])
def test_every_listing_shape_is_one_index_walk(tmp_path: Path, shape: str, keyset: bool) -> None:
    """No shape scans the table or sorts: each walks an index in the listing's order."""
    where, params = PLAN_SHAPES[shape]
    conds = [where] if where else []
    if keyset:
        conds.append("(submitted_at, rowid) < (?, ?)")
        params = [*params, 1.0, 5]
    sql = "SELECT submitted_at, rowid FROM tasks"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += " ORDER BY submitted_at DESC, rowid DESC LIMIT ?"
    with StateStore(tmp_path / "s.db") as s:
        fill(s, 50)
        plan = " | ".join(
            r[3] for r in s.read(lambda c: c.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, 10]))
        )
    assert "USING" in plan and "INDEX" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    assert not plan.startswith("SCAN tasks") or "INDEX" in plan, plan


def test_status_counts_are_cached_and_recounted_in_the_background(tmp_path: Path) -> None:
    """The status path never waits for a count once it has one: a stale count is answered at
    once and recounted behind it, one recount at a time."""

    async def go(s: StateStore) -> None:
        counts = taskstore.StatusCounts(s, max_age_s=0.05)
        assert await counts.get() == ({"pending": 30}, pytest.approx(0.0, abs=0.05))
        finish(s, rows[:10], "completed", 1_500.0)
        assert (await counts.get())[0] == {"pending": 30}  # fresh enough: not recounted
        await asyncio.sleep(0.1)
        stale, age = await counts.get()  # stale: answered as is, recount started
        assert stale == {"pending": 30} and age > 0.05
        await asyncio.sleep(0.05)
        assert (await counts.get())[0] == {"pending": 20, "completed": 10}

    with StateStore(tmp_path / "s.db") as s:
        rows = fill(s, 30)
        asyncio.run(go(s))


def test_counts_walk_the_status_index(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        fill(s, 50)
        plan = s.read(
            lambda c: c.execute(
                "EXPLAIN QUERY PLAN SELECT status, COUNT(*) FROM tasks GROUP BY status"
            ).fetchall()
        )
    assert [r[3] for r in plan] == ["SCAN tasks USING COVERING INDEX tasks_status_idx"]


def test_migration_4_reindexes_an_existing_table(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with StateStore(db, migrations={v: MIGRATIONS[v] for v in (1, 2, 3)}) as old:
        rows = fill(old, 40)
    with StateStore(db) as s:
        assert s.read(taskstore.count_by_status) == {"pending": 40}
        assert walk(s, 7)[0] == newest_first(rows)
        indexes = {
            r[0]: r[1]
            for r in s.read(
                lambda c: c.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
                    " AND sql IS NOT NULL"
                ).fetchall()
            )
        }
    assert "(status, submitted_at)" in indexes["tasks_status_idx"]
    assert "(submitted_at)" in indexes["tasks_submitted_idx"]
    assert "(class, status, submitted_at)" in indexes["tasks_class_idx"]


def test_migration_5_indexes_finished_at_only_where_it_is_set(tmp_path: Path) -> None:
    """An existing database's ``finished_at`` index becomes partial: it holds the finished
    tasks only (a pending row adds no entry to its admission's commit), and the purge of the
    finished ones still walks it."""
    db = tmp_path / "s.db"
    with StateStore(db, migrations={v: MIGRATIONS[v] for v in (1, 2, 3, 4)}) as old:
        rows = fill(old, 30)
        finish(old, rows[:10], "completed", 2_000.0)
    with StateStore(db) as s:
        finish(s, rows[10:14], "failed", 2_001.0)

        def entries(c: sqlite3.Connection) -> int:  # the index's own cells (SQLite's dbstat)
            found = c.execute(
                "SELECT SUM(ncell) FROM dbstat WHERE name = 'tasks_finished_idx'"
            ).fetchone()
            return int(found[0])

        assert s.read(entries) == 14
        index_sql = s.read(
            lambda c: c.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'tasks_finished_idx'"
            ).fetchone()[0]
        )
        assert index_sql.endswith("WHERE finished_at IS NOT NULL")
        purged = s.write(lambda c: taskstore.purge_finished(c, 2_000.5))
        assert purged["tasks"] == 10
        assert s.read(taskstore.count_by_status) == {"pending": 16, "failed": 4}


def test_status_rows_decode_to_what_the_status_dicts_say(tmp_path: Path) -> None:
    """What the scheduler answers a status read with (a ``StatusRow``: read from the store, or
    built from a task it holds) decodes on the asking side to its status dict's TaskStatus;
    ``finished_only`` gives an unfinished task's status instead of its row."""
    with StateStore(tmp_path / "s.db") as s:
        rows = fill(s, 6)
        for r, result in zip(rows[:4], ("text", {"a": [1, None]}, 7, None), strict=True):
            r.result = result
        rows[0].spec = TaskSpec(
            task_id=rows[0].task_id,
            task_class="cpu_short",
            payload={"type": "noop"},
            priority=3,
            workflow_id="wf",
            timeout_s=2.5,
        )
        s.write(lambda c: c.execute(
            "UPDATE tasks SET priority = 3, workflow_id = 'wf', timeout_s = 2.5 WHERE id = ?",
            (rows[0].task_id,),
        ))  # fmt: skip
        finish(s, rows[:2], "completed", 2_000.0)
        finish(s, rows[2:4], "failed", 2_001.0)
        ids = [r.task_id for r in rows] + ["nope"]
        stored = s.read(lambda c: taskstore.get_status_rows(c, ids))
        finished = s.read(lambda c: taskstore.get_status_rows(c, ids, finished_only=True))
    assert set(stored) == set(finished) == {r.task_id for r in rows}
    for r in rows:
        want = TaskStatus.from_scheduler(r.status_dict())
        assert TaskStatus.from_status_row(stored[r.task_id]) == want
        assert TaskStatus.from_status_row(r.status_row()) == want
        assert finished[r.task_id] == (stored[r.task_id] if want.terminal else "pending")
    first = TaskStatus.from_status_row(stored[rows[0].task_id])
    assert (first.priority, first.workflow_id, first.timeout_s, first.result) == (
        3,
        "wf",
        2.5,
        "text",
    )


def test_statuses_read_without_payloads_match_the_rows(tmp_path: Path) -> None:
    """``get_statuses`` (status rows read without payloads, as dicts) answers exactly what the
    full rows would, results of every JSON kind included, and leaves out unknown ids."""
    with StateStore(tmp_path / "s.db") as s:
        rows = fill(s, 6)
        for r, result in zip(rows[:4], ("text", {"a": [1, None]}, 7, None), strict=True):
            r.result = result
        finish(s, rows[:2], "completed", 2_000.0)
        finish(s, rows[2:4], "failed", 2_001.0)
        ids = [r.task_id for r in rows] + ["nope"]
        full = s.read(lambda c: taskstore.get_tasks(c, ids))
        lean = s.read(lambda c: taskstore.get_statuses(c, ids))
        assert set(lean) == {r.task_id for r in rows}
        assert lean == {t: r.status_dict() for t, r in full.items()}
        assert (
            lean[rows[0].task_id]["result"] == "text"
            and lean[rows[4].task_id]["status"] == "pending"
        )

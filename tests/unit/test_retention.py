"""Retention (``rayinfra.retention``) on a real state store: finished tasks, finished workflow
runs with their idempotency keys, old events and changes go; running runs and recent ones stay.
In steps (what the scheduler runs): the same result as one transaction, every step bounded and
walking an index, other writes committing in between."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from rayinfra import retention, taskstore
from rayinfra.scheduling.tasks import TaskSpec
from rayinfra.store import ChangeRecord, EventRecord, StateStore
from rayinfra.taskstore import TaskRow, Transition
from rayinfra.workflows.runs import Run, new_run
from rayinfra.workflows.spec import parse_workflow
from rayinfra.workflows.store import RUN_KEYS, RunStore

WF = parse_workflow(
    {"name": "w", "nodes": [{"id": "a", "name": "a", "type": "task", "task": {"class": "c"}}]}
)


def run(key: str, *, finished_at: float | None) -> Run:
    r = new_run(WF, {}, key, now=1_000.0)
    if finished_at is not None:
        r.status, r.completed_at = "succeeded", finished_at
    return r


def test_finished_runs_older_than_the_cutoff_go_with_their_keys(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as s:
        runs = RunStore(s)
        old, recent, running = (
            run("k-old", finished_at=1_500.0),
            run("k-recent", finished_at=2_500.0),
            run("k-running", finished_at=None),
        )
        asyncio.run(runs.save([old, recent, running]))
        s.append_events([EventRecord(0, "workflow_completed", old.id, {}, 1_500)]).result()

        out = s.write(lambda c: retention.purge(c, 2_000.0, keep_unpublished=False))

        assert out == {"tasks": 0, "events": 1, "changes": 0, "workflow_runs": 1}
        assert runs.get(old.id) is None and runs.by_key(WF.id, "k-old") is None
        assert {r.id for r in runs.all()} == {recent.id, running.id}
        kept = runs.by_key(WF.id, "k-running")
        assert kept is not None and kept.id == running.id
        assert set(s.kv_items(RUN_KEYS)) == {f"{WF.id}::k-recent", f"{WF.id}::k-running"}
        # a run that has not finished stays however old it is
        out = s.write(lambda c: retention.purge(c, 1e12, keep_unpublished=False))
        assert out["workflow_runs"] == 1 and [r.id for r in runs.all()] == [running.id]


# --------------------------------------------------------------------------- in steps


def _tasks(s: StateStore, n: int, *, finished_at: float | None, prefix: str) -> None:
    rows = []
    for i in range(n):
        spec = TaskSpec(task_id=f"{prefix}{i:05d}", task_class="c", payload={"type": "noop"})
        r = TaskRow(spec=spec, identity=spec.identity(), trusted=True, status="pending")
        r.submitted_at = 1_000.0
        rows.append(r)
    s.write(lambda c: taskstore.insert_new(c, rows, 1_000.0))
    if finished_at is not None:
        for r in rows:
            r.status, r.started_at, r.finished_at = "completed", finished_at, finished_at
        done = [Transition(r, "task_completed") for r in rows]
        s.write(lambda c: taskstore.apply_transitions(c, done, finished_at))


def _filled(tmp_path: Path) -> StateStore:
    """Old finished tasks (1000 with one finished_at: ties across step boundaries), recent and
    unfinished ones, old events sharing timestamps, old and recent runs."""
    s = StateStore(tmp_path / "state.db")
    _tasks(s, 1_000, finished_at=1_500.0, prefix="old")
    _tasks(s, 30, finished_at=2_500.0, prefix="recent")
    _tasks(s, 40, finished_at=None, prefix="pending")  # old, but not finished: they stay
    s.append_events([EventRecord(0, "x", f"e{i}", {}, 1_000 + i // 100) for i in range(700)])
    s.append_changes([ChangeRecord(0, "st", f"k{i}", "k", {}, 1_000.0) for i in range(250)])
    runs = [run(f"k{i}", finished_at=1_500.0 if i % 3 else None) for i in range(30)]
    asyncio.run(RunStore(s).save(runs))
    s.append_events([]).result()
    return s


def _snapshot(s: StateStore) -> dict[str, object]:
    q = {
        "tasks": "SELECT id FROM tasks ORDER BY id",
        "events": "SELECT seq FROM events ORDER BY seq",
        "changes": "SELECT seq FROM changes ORDER BY seq",
        "run_keys": f"SELECT key FROM kv WHERE namespace = '{RUN_KEYS}' ORDER BY key",
        "runs": "SELECT COUNT(*) FROM kv WHERE namespace = 'workflow_runs'",  # ids are random
        "counts": "SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status",
    }
    return {k: s.read(lambda c, sql=sql: c.execute(sql).fetchall()) for k, sql in q.items()}


def test_in_steps_deletes_what_one_transaction_deletes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with _filled(tmp_path / "a") as one, _filled(tmp_path / "b") as steps:
        want = one.write(lambda c: retention.purge(c, 2_000.0, keep_unpublished=False))
        got = asyncio.run(
            retention.purge_in_steps(steps, 2_000.0, keep_unpublished=False, chunk_rows=7)
        )
        assert got == want
        assert want["tasks"] == 1_000 and want["workflow_runs"] == 20
        assert want["events"] == 700 + 1_070 + 1_000  # ours, the submits, the old completions
        assert _snapshot(one) == _snapshot(steps)
        assert steps.read(taskstore.count_by_status) == {"pending": 40, "completed": 30}


def test_every_step_is_bounded_and_passes_over_kept_rows_once(tmp_path: Path) -> None:
    """With Kafka configured and no cursor yet, every old event stays: the walk still ends
    after about rows/chunk steps (kept rows are never looked at twice) and no step deletes
    more than a chunk."""
    with _filled(tmp_path) as s:
        p = retention.Purge(2_000.0, keep_unpublished=True, chunk_rows=50)
        sizes = []
        while True:
            before = sum(p.deleted.values())
            finished = s.write(p.step)
            sizes.append(sum(p.deleted.values()) - before)
            if finished:
                break
        assert max(sizes) <= 50
        assert p.deleted["events"] == 0 and p.deleted["tasks"] == 1_000
        # rows looked at: finished tasks, old events, changes, runs, run keys; a partial step each
        looked_at = 1_030 + 2_770 + 250 + 30 + 30
        assert p.steps <= looked_at // 50 + 5


def test_purge_steps_walk_their_index(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of every statement a purge runs: each step seeks the index of its
    ordering column to its exact position (never the status index, which would scan every
    finished task per step) and deletes the rows it found by rowid."""
    with _filled(tmp_path) as s:
        statements: list[str] = []

        def traced(c: sqlite3.Connection) -> dict[str, int]:
            c.set_trace_callback(statements.append)
            try:
                p = retention.Purge(2_000.0, keep_unpublished=True, chunk_rows=7)
                while not p.step(c):
                    pass
                return p.deleted
            finally:
                c.set_trace_callback(None)

        s.write(traced)
        plans = {}
        for sql in {st for st in statements if st.startswith(("SELECT", "DELETE"))}:
            plans[sql] = " | ".join(
                r[3] for r in s.read(lambda c, q=sql: c.execute(f"EXPLAIN QUERY PLAN {q}"))
            )
    walks = {"tasks": "tasks_finished_idx", "events": "events_ts_idx"}
    walks |= {"changes": "changes_ts_idx", "kv": "sqlite_autoindex_kv_1"}
    resumes = {"tasks": "finished_at=? AND rowid>?", "events": "ts=? AND rowid>?"}
    resumes |= {"changes": "ts=? AND rowid>?", "kv": "namespace=? AND key=?"}  # unique: 1 row
    assert {sql.split()[0] for sql in plans} == {"SELECT", "DELETE"}
    resumed: set[str] = set()
    for sql, plan in plans.items():
        table = sql.split(" FROM ")[1].split()[0]
        first = plan.split(" | ")[0]
        if sql.startswith("DELETE"):
            assert first.startswith(f"SEARCH {table} USING INTEGER PRIMARY KEY"), (sql, plan)
        else:
            assert walks[table] in first, (sql, plan)
            if "ORDER BY rowid" in sql or "ORDER BY seq" in sql:  # resuming mid-value
                assert resumes[table] in first, (sql, plan)
                resumed.add(table)
        assert "TEMP B-TREE" not in plan, (sql, plan)
    assert resumed == set(walks)  # every kind had a step that resumed inside one value


def _step_cost(tmp_path: Path, n: int) -> int:
    """SQLite VM instructions of the second step of purging ``n`` finished tasks and their
    events, all sharing one finished_at and one ts (a mass completion)."""
    (tmp_path / str(n)).mkdir()
    with StateStore(tmp_path / str(n) / "state.db") as s:
        _tasks(s, n, finished_at=1_500.0, prefix="t")
        s.write(lambda c: c.execute("UPDATE events SET ts = 1000"))
        p = retention.Purge(2_000.0, keep_unpublished=False, chunk_rows=100)
        s.write(p.step)
        ticks = [0]

        def counted(c: sqlite3.Connection) -> bool:
            c.set_progress_handler(lambda: ticks.__setitem__(0, ticks[0] + 1) or 0, 100)
            try:
                return p.step(c)
            finally:
                c.set_progress_handler(None, 0)

        s.write(counted)
        return ticks[0]


def test_a_step_costs_the_same_however_many_rows_share_a_value(tmp_path: Path) -> None:
    """Regression: a step once scanned every row with the resumed-from value (a row-value
    range seeks on the first column only): with a million tasks finished at the same moment,
    each step took 100+ ms and the purge stalled submits."""
    small, large = _step_cost(tmp_path, 1_000), _step_cost(tmp_path, 10_000)
    assert large < 1.5 * small, (small, large)


def test_other_writes_commit_between_steps(tmp_path: Path) -> None:
    """While a purge runs in steps, a write queued meanwhile (here or from another process's
    store on the same file) commits before the purge ends."""

    async def go(s: StateStore, other: StateStore) -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        purge = asyncio.create_task(
            retention.purge_in_steps(s, 2_000.0, keep_unpublished=False, chunk_rows=20)
        )
        await asyncio.sleep(0.005)
        await s.awrite(lambda c: c.execute("SELECT 1").fetchone())
        mine = loop.time()
        await asyncio.wrap_future(other.kv_put("t", "k", 1))
        theirs = loop.time()
        await purge
        return mine, theirs, loop.time()

    with _filled(tmp_path) as s, StateStore(tmp_path / "state.db") as other:
        mine, theirs, ended = asyncio.run(go(s, other))
        assert mine < ended and theirs < ended
        assert other.kv_get("t", "k") == 1


def test_the_stores_purge_goes_in_steps_too(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as s:
        s.append_events([EventRecord(0, "x", "r", {}, 1_000 + i // 10) for i in range(95)])
        s.append_changes([ChangeRecord(0, "st", "k", "k", {}, 1_000.0) for _ in range(33)])
        before = s.stats()["commits"]
        assert s.purge(2_000, chunk_rows=10).result() == {"events": 95, "changes": 33}
        assert s.stats()["commits"] - before >= 10 + 4  # a transaction per step
        assert s.events(limit=10) == []

"""WAL checkpoints off the commit path (rayinfra.wal) on a real SQLite store: the writer's own
checkpoint is only a backstop, the store's thread copies and restarts the WAL while commits go
on, and nothing committed meanwhile is lost."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from rayinfra import wal
from rayinfra.store import StateStore


def test_a_commit_checkpoints_only_as_a_backstop(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        pages = s.write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        limit = s.write(lambda c: c.execute("PRAGMA journal_size_limit").fetchone()[0])
    assert pages == wal.BACKSTOP_PAGES > wal.RESTART_PAGES > wal.PACE_PAGES
    assert limit == wal.JOURNAL_SIZE_LIMIT


def test_the_wal_is_copied_back_and_restarted_while_commits_go_on(tmp_path: Path) -> None:
    """~24 MiB in 300 commits (about 6,000 pages, past RESTART_PAGES): the store's thread
    checkpoints and restarts the WAL, below the writer's backstop, and every value survives a
    reopen."""
    blob = "x" * 80_000
    db = tmp_path / "s.db"
    with StateStore(db) as s:
        for i in range(300):
            s.kv_put("blobs", f"k{i}", {"i": i, "blob": blob}).result()
        deadline = time.monotonic() + 10
        while s.stats()["wal_restarts"] < 1 and time.monotonic() < deadline:
            s.kv_put("blobs", "tick", time.monotonic()).result()  # a commit wakes the thread
            time.sleep(0.05)
        stats = s.stats()
    assert stats["checkpoints"] >= 1 and stats["wal_restarts"] >= 1, stats
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT COUNT(*) FROM kv WHERE namespace = 'blobs' AND key LIKE 'k%'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert found == 300


def test_an_idle_store_does_not_checkpoint(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as s:
        time.sleep(0.3)
        idle = s.stats()["checkpoints"]
        s.kv_put("a", "b", 1).result()
        deadline = time.monotonic() + 5
        while s.stats()["checkpoints"] == idle and time.monotonic() < deadline:
            time.sleep(0.01)
        after = s.stats()["checkpoints"]
    assert (idle, after) == (0, 1)


@pytest.mark.parametrize(
    ("pages_per_s", "wait_s"),
    [
        (0.0, wal.EVERY_S),  # nothing appended: the longest wait
        (1_000.0, wal.EVERY_S),  # 1 s to reach the pace: capped
        (40_000.0, 0.025),  # the pace in 25 ms
        (10_000_000.0, wal.MIN_WAIT_S),  # floored
    ],
)
def test_a_faster_writer_is_checkpointed_sooner(pages_per_s: float, wait_s: float) -> None:
    assert wal.next_wait(pages_per_s) == pytest.approx(wait_s)

"""WAL checkpoints off the commit path: a thread of the store's own copies committed pages back
into the database file while commits go on.

SQLite's default copies inside the ``COMMIT`` that takes the WAL past 1,000 pages. On a 2-core
host, admissions of ten tasks one after another (``bench/bench_gateway.py``'s shape): one commit
in 37 stalled 5-7 ms, and the stalls were half of all commit time. Copied from a thread at
about the same pace, the same admissions take 0.53-0.65 ms on average (0.65-0.73 before), 0.93-
1.15 ms at p99 (6.7-7.6) and at most 6.9-8.4 ms (8.1-8.5): docs/benchmarks.md, "Sessions 16-17".

A checkpoint that runs beside the writer never catches the WAL's end, and SQLite restarts the
WAL from its start only when it has all been copied; so once it holds :data:`RESTART_PAGES`, a
RESTART follows the copy. That one holds writers back while it copies the last pages and syncs
(6-12 ms, once per ~4,000 pages). The writer's own automatic checkpoint stays on as a
backstop, at :data:`BACKSTOP_PAGES`, for when this thread falls that far behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EVERY_S = 0.25
"""At most one checkpoint per this many seconds (sooner for a fast writer, :data:`PACE_PAGES`),
and only after a commit (the scheduler at 10,000 tasks/s appends ~5,000 pages a second)."""

PACE_PAGES = 1_000
"""Faster writers are checkpointed sooner: the wait is cut so that about this many pages (4
MiB) are appended between two checkpoints, down to :data:`MIN_WAIT_S`. Each checkpoint syncs;
at 4,000 pages between syncs, more dirty pages piled up for the kernel to write back, and
commits meanwhile stalled up to 35 ms (10 ms at 1,000)."""

RESTART_PAGES = 4_000
"""A WAL this long is restarted after the round's copy (a RESTART: writers wait for it)."""

MIN_WAIT_S = 0.005

RESTART_WAIT_MS = 5
"""How long a RESTART waits for the write lock and for readers of older snapshots (new
writers wait behind it meanwhile) before it gives up until next time."""

BACKSTOP_PAGES = 16_000
"""The writer connection's ``wal_autocheckpoint`` (64 MiB of 4 KiB pages)."""

JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""A WAL file that grew past this (a long reader held checkpoints back) is cut back to it
when it is next reset."""


def tune_writer(conn: sqlite3.Connection) -> None:
    """The writer connection's settings under a :class:`Checkpointer`."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES:d}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT:d}")


class Checkpointer:
    """``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own after :meth:`committed`
    said there is something to copy, at most every ``every_s`` (sooner for a fast writer,
    :func:`next_wait`), then a RESTART once the WAL is long.

    PASSIVE never waits for a reader or writer: it copies what no reader still needs and
    leaves the rest for next time; one running in another process makes it return at once
    (``busy``). Writers go on appending meanwhile. The RESTART waits at most
    :data:`RESTART_WAIT_MS` for locks, else it is left to the next round.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], every_s: float = EVERY_S):
        self._connect = connect
        self._every_s = every_s
        self._wal_pages = 0  # the WAL's length at the last checkpoint
        self._at = time.monotonic()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats: dict[str, float] = {
            "checkpoints": 0,
            "checkpoint_busy": 0,
            "wal_restarts": 0,
            "checkpoint_s": 0.0,
        }
        self._thread = threading.Thread(target=self._run, name="rayinfra-store-wal", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A commit added frames to the WAL (cheap: sets an event)."""
        self._dirty.set()

    def stats(self) -> dict[str, float]:
        """checkpoints (rounds run), checkpoint_busy (rounds that found another checkpoint
        running or could not restart), wal_restarts, checkpoint_s (seconds spent)."""
        with self._lock:
            return dict(self._stats)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._dirty.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        conn = self._connect()
        try:
            conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS:d}")
            while True:
                self._dirty.wait()
                if self._stop.is_set():
                    return
                self._dirty.clear()
                if self._stop.wait(self._checkpoint(conn)):
                    return
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> float:
        """Run one; the seconds to wait before the next."""
        t0 = time.monotonic()
        try:
            busy, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            restarted = False
            if pages >= RESTART_PAGES:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # what came meanwhile
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                restarted = not busy
        except sqlite3.Error:  # a locked or closing database: the next commit tries again
            log.debug("WAL checkpoint failed", exc_info=True)
            return self._every_s
        t1 = time.monotonic()
        with self._lock:
            self._stats["checkpoints"] += 1
            self._stats["checkpoint_busy"] += int(busy)
            self._stats["wal_restarts"] += int(restarted)
            self._stats["checkpoint_s"] += t1 - t0
        # pages appended since the last one (a WAL restarted from its start counts from 0)
        appended = pages - self._wal_pages if pages >= self._wal_pages else pages
        rate = appended / max(t1 - self._at, 1e-3)
        self._wal_pages, self._at = max(pages, 0), t1
        return next_wait(rate, self._every_s)


def next_wait(pages_per_s: float, every_s: float = EVERY_S) -> float:
    """Seconds until the next checkpoint for a WAL growing ``pages_per_s``."""
    if pages_per_s <= 0:
        return every_s
    return min(every_s, max(MIN_WAIT_S, PACE_PAGES / pages_per_s))

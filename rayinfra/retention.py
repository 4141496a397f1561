"""Retention: what the purge deletes, and how it goes about it without stalling the writer.

Finished tasks, finished workflow runs (and their idempotency keys), events and change-feed rows
older than the cutoff. With Kafka configured, events the event bus has not published yet stay:
the events table is its spool (:func:`rayinfra.store.delete_old_events_step`).

A purge walks each kind in steps (:func:`rayinfra.store.delete_step`): one step looks at no more
than ``state.purge_chunk_rows`` rows in index order and is its own short write transaction, and
:func:`purge_in_steps` pauses ``state.purge_pause_s`` between steps. So purging a million rows
never holds SQLite's single write lock for more than one step: the submits the gateway commits
from its own process, and the scheduler's own writes, go in between.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from functools import partial

from rayinfra import taskstore
from rayinfra.config import RayinfraConfig
from rayinfra.store import (
    PURGE_STEP_ROWS,
    Position,
    StateStore,
    StepResult,
    delete_old_changes_step,
    delete_old_events_step,
    delete_step,
)
from rayinfra.workflows.store import RUN_KEYS, RUNS

__all__ = ["KINDS", "Purge", "Retention", "purge", "purge_in_steps"]

KINDS = ("tasks", "events", "changes", "workflow_runs")
"""The keys of a purge's counts."""


def delete_finished_runs_step(
    conn: sqlite3.Connection, older_than: float, *, after: Position | None, limit: int
) -> StepResult:
    """Write op part: one step (``limit`` runs looked at, in id order) of deleting the workflow
    runs that finished before ``older_than`` (a run has ``completed_at`` once it finished)."""
    return delete_step(
        conn,
        "kv",
        ("key", "rowid"),
        "namespace = ?",
        [RUNS],
        after=after,
        limit=limit,
        only="json_extract(value, '$.completed_at') < ?",
        only_params=[older_than],
    )


def delete_orphan_run_keys_step(
    conn: sqlite3.Connection, *, after: Position | None, limit: int
) -> StepResult:
    """Write op part: one step of deleting idempotency keys whose run is gone (a repeat of such
    a key then starts a new run)."""
    return delete_step(
        conn,
        "kv",
        ("key", "rowid"),
        "namespace = ?",
        [RUN_KEYS],
        after=after,
        limit=limit,
        only="NOT EXISTS (SELECT 1 FROM kv AS run WHERE run.namespace = ?"
        " AND run.key = json_extract(kv.value, '$'))",
        only_params=[RUNS],
    )


class Purge:
    """One purge's progress: which kind it is deleting, where that walk resumes, what it deleted.

    :meth:`step` is a write op; call it until it returns ``True`` (each call in its own
    transaction, or all in one: :func:`purge`). Events older than ``events_older_than``
    (default: ``older_than``), everything else older than ``older_than`` (unix seconds).
    """

    def __init__(
        self,
        older_than: float,
        *,
        keep_unpublished: bool,
        events_older_than: float | None = None,
        chunk_rows: int = PURGE_STEP_ROWS,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        events_cut = int(older_than if events_older_than is None else events_older_than)
        self.chunk_rows = chunk_rows
        self.deleted: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._steps: list[tuple[str, Callable[..., StepResult]]] = [
            ("tasks", partial(taskstore.purge_finished_step, older_than=older_than)),
            (
                "events",
                partial(
                    delete_old_events_step,
                    older_than_ts=events_cut,
                    keep_unpublished=keep_unpublished,
                ),
            ),
            ("changes", partial(delete_old_changes_step, older_than_ts=older_than)),
            ("workflow_runs", partial(delete_finished_runs_step, older_than=older_than)),
            ("", delete_orphan_run_keys_step),  # not counted; only after runs were deleted
        ]
        self._i = 0
        self._after: Position | None = None
        self.steps = 0

    @property
    def done(self) -> bool:
        return self._i >= len(self._steps)

    def step(self, conn: sqlite3.Connection) -> bool:
        """Write op: the next step (at most ``chunk_rows`` rows looked at); ``True`` when the
        whole purge is done."""
        if self._i == len(self._steps) - 1 and not self.deleted["workflow_runs"]:
            self._i += 1  # no run went: no key can have lost its run
        if self.done:
            return True
        kind, fn = self._steps[self._i]
        n, after = fn(conn, after=self._after, limit=self.chunk_rows)
        self.steps += 1
        if kind:
            self.deleted[kind] += n
        self._after = after
        if after is None:
            self._i += 1
        return self.done


def purge(
    conn: sqlite3.Connection,
    older_than: float,
    *,
    keep_unpublished: bool,
    events_older_than: float | None = None,
) -> dict[str, int]:
    """Write op: the whole purge in this one transaction (small stores and tests; the scheduler
    uses :func:`purge_in_steps`). Counts deleted per kind (:data:`KINDS`)."""
    p = Purge(older_than, keep_unpublished=keep_unpublished, events_older_than=events_older_than)
    while not p.step(conn):
        pass
    return p.deleted


async def purge_in_steps(
    store: StateStore,
    older_than: float,
    *,
    keep_unpublished: bool,
    events_older_than: float | None = None,
    chunk_rows: int = PURGE_STEP_ROWS,
    pause_s: float = 0.0,
) -> dict[str, int]:
    """The purge as a series of short write ops, ``pause_s`` apart (writes queued meanwhile,
    here or in another process, commit in between). Counts deleted per kind (:data:`KINDS`)."""
    p = Purge(
        older_than,
        keep_unpublished=keep_unpublished,
        events_older_than=events_older_than,
        chunk_rows=chunk_rows,
    )
    while not await store.awrite(p.step):
        await asyncio.sleep(pause_s)
    return p.deleted


class Retention:
    """The runtime's retention policy (``[state]``: ``result_ttl_s``, ``event_ttl_s``,
    ``purge_chunk_rows``, ``purge_pause_s``), one purge at a time: a second one waits, then
    runs. With Kafka configured, events the event bus has not published stay (its spool)."""

    def __init__(self, store: StateStore, config: RayinfraConfig) -> None:
        self.store = store
        self.config = config
        self._lock = asyncio.Lock()

    async def purge(self, older_than_s: float | None = None) -> dict[str, int]:
        """Delete what is older than ``older_than_s`` (default: each kind's TTL); counts
        deleted per kind (:data:`KINDS`)."""
        st = self.config.state
        age = st.result_ttl_s if older_than_s is None else older_than_s
        event_age = (st.event_ttl_s or st.result_ttl_s) if older_than_s is None else older_than_s
        async with self._lock:
            now = time.time()
            return await purge_in_steps(
                self.store,
                now - age,
                keep_unpublished=self.config.events.kafka_bootstrap_servers is not None,
                events_older_than=now - event_age,
                chunk_rows=st.purge_chunk_rows,
                pause_s=st.purge_pause_s,
            )

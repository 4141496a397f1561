"""``task_started`` events, written only for attempts that outlive their first moments.

A task still running ``STARTED_AFTER_S`` after its dispatch gets its ``task_started`` event; one
that ended sooner has none (its final event carries ``started_at``): two event rows per short
task instead of three. Subscribers still see ``running`` first (docs/events.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

from rayinfra import taskstore
from rayinfra.store import StateStore
from rayinfra.taskstore import TaskRow, Transition

log = logging.getLogger(__name__)

STARTED_AFTER_S = 0.05


class StartedEvents:
    """Collects the attempts of dispatched batches and, ``STARTED_AFTER_S`` after the first of
    them, writes the ``task_started`` of those still running: queued behind earlier writes by
    the store's single writer (nothing waits for it), so a task's later end is written after
    it. ``advance`` is told the last seq written. Nothing is built for an attempt that ended
    sooner (most do)."""

    def __init__(self, store: StateStore, advance: Callable[[int], None]) -> None:
        self.store = store
        self._advance = advance
        self._pending: list[tuple[TaskRow, int]] = []

    def dispatched(self, started: list[tuple[TaskRow, int]]) -> None:
        """Attempts just sent to an executor: ``(row, attempt number)`` each."""
        if not self._pending:
            asyncio.get_running_loop().call_later(STARTED_AFTER_S, self._write)
        self._pending += started

    def _write(self) -> None:
        running = [
            Transition(row, "task_started", {"attempt": attempt})
            for row, attempt in self._pending
            if row.status == "running" and row.attempts == attempt
        ]
        self._pending = []
        if not running:
            return
        started = partial(
            taskstore.apply_transitions, transitions=running, now=time.time(), update_rows=False
        )
        asyncio.wrap_future(self.store.submit(started)).add_done_callback(self._written)

    def _written(self, fut: asyncio.Future[int]) -> None:
        if fut.exception() is not None:
            log.error("persisting task_started failed: %s", fut.exception())
        else:
            self._advance(fut.result())

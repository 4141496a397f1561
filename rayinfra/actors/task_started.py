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
from rayinfra.taskstore import Transition

log = logging.getLogger(__name__)

STARTED_AFTER_S = 0.05


class StartedEvents:
    """Collects the ``task_started`` transitions of dispatched batches and, ``STARTED_AFTER_S``
    after the first of them, writes those whose attempt still runs: queued behind earlier
    writes by the store's single writer (nothing waits for it), so a task's later end is
    written after it. ``advance`` is told the last seq written."""

    def __init__(self, store: StateStore, advance: Callable[[int], None]) -> None:
        self.store = store
        self._advance = advance
        self._pending: list[Transition] = []

    def dispatched(self, transitions: list[Transition]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_later(STARTED_AFTER_S, self._write)
        self._pending += transitions

    def _write(self) -> None:
        running = [
            t for t in self._pending
            if t.row.status == "running" and t.row.attempts == t.event_data["attempt"]
        ]  # fmt: skip
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

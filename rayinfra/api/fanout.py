"""One long-poll per source, fanned out to any number of local subscribers (pure asyncio).

The gateway serves many streams (StreamTaskResults, StreamEvents, StreamHealth); each would
otherwise hold its own long-poll on an actor. A :class:`Fanout` keeps exactly one poll running
while anyone listens and none when nobody does, so cancelled streams leave both the gateway's
task count and the actor's watcher count where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: poll(after_seq) -> (seq, items); must return within its own timeout
PollFn = Callable[[int], Awaitable[tuple[int, list[Any]]]]
RETRY_S = 1.0


class Subscription:
    """A subscriber's queue; iterate with ``await sub.get()``; close with ``fanout.unsubscribe``."""

    def __init__(self, accept: Callable[[Any], bool], maxsize: int) -> None:
        self.accept = accept
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, item: Any) -> None:
        if not self.accept(item):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True  # the reader is too slow: it ends with an error

    async def get(self, timeout_s: float | None = None) -> Any:
        """The next item; ``TimeoutError`` after ``timeout_s`` without one (nothing is lost)."""
        if timeout_s is None:
            return await self.queue.get()
        return await asyncio.wait_for(self.queue.get(), max(0.0, timeout_s))


class Fanout:
    def __init__(self, poll: PollFn, start_seq: Callable[[], Awaitable[int]]) -> None:
        self._poll = poll
        self._start_seq = start_seq
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.seq = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def polling(self) -> bool:
        return self._task is not None and not self._task.done()

    async def subscribe(self, accept: Callable[[Any], bool], maxsize: int = 10_000) -> Subscription:
        """Register before reading any backlog, so nothing published in between is lost."""
        sub = Subscription(accept, maxsize)
        if not self.polling:
            self.seq = await self._start_seq()
        self._subs.add(sub)
        if not self.polling:
            self._task = asyncio.ensure_future(self._run())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        if not self._subs and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self._subs:
            try:
                seq, items = await self._poll(self.seq)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the source restarts: resume from our seq
                log.debug("fan-out poll failed: %s", e)
                await asyncio.sleep(RETRY_S)
                continue
            self.seq = max(self.seq, seq)
            for item in items:
                for sub in list(self._subs):
                    sub.offer(item)

    async def close(self) -> None:
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

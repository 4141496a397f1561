"""Expensive read-only calls shared by the callers that ask at the same time.

A health check or a runtime status polled hard (load balancers, dashboards, every port's
``Health``) costs a round of actor pings and GCS reads per answer. :class:`SharedCalls` gives
callers with equal keys one call: those that ask while it runs get its answer, and so do those
that ask less than ``reuse_s`` after it started. An answer is never older than ``reuse_s`` plus
one call; a call that failed or was cancelled is not given again, nor one made on another event
loop (a client's ControlPlane may outlive its loop); a caller that gives up does not end the
call for the others. Entries are dropped once they can no longer be reused, so keys from
clients (a status's service names) do not pile up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedCalls(Generic[T]):
    def __init__(self, reuse_s: float | Callable[[], float] = 0.0) -> None:
        """``reuse_s``: how long after a call started its answer is given again (0: only to
        callers that asked while it ran); a function is read at each call (a module setting)."""
        self._reuse_s = reuse_s
        # key -> (when the call started, monotonic; the call)
        self._calls: dict[Hashable, tuple[float, asyncio.Future[T]]] = {}

    @property
    def reuse_s(self) -> float:
        return self._reuse_s() if callable(self._reuse_s) else self._reuse_s

    def __len__(self) -> int:
        return len(self._calls)

    async def get(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``'s answer, or that of a call with the same ``key`` that can be shared."""
        now = time.monotonic()
        started, shared = self._calls.get(key, (0.0, None))
        if shared is None or not self._shareable(shared, now - started):
            shared = asyncio.ensure_future(call())
            self._calls[key] = (now, shared)
            shared.add_done_callback(lambda f: self._ended(key, f))
        return await asyncio.shield(shared)  # a caller that gives up does not end it for others

    def _shareable(self, f: asyncio.Future[T], age_s: float) -> bool:
        if f.get_loop() is not asyncio.get_running_loop():
            return False
        if not f.done():
            return True
        return age_s < self.reuse_s and not f.cancelled() and f.exception() is None

    def _ended(self, key: Hashable, f: asyncio.Future[T]) -> None:
        """Forget the call once it cannot be given again (now if it failed, else after
        ``reuse_s``), unless a newer one has its key by then."""
        ok = not f.cancelled() and f.exception() is None
        delay = self.reuse_s if ok else 0.0

        def drop() -> None:
            if self._calls.get(key, (0.0, None))[1] is f:
                del self._calls[key]

        if delay > 0:
            f.get_loop().call_later(delay, drop)
        else:
            drop()

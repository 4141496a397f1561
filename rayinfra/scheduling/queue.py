"""A priority queue of pending tasks: higher priority first, FIFO ties, aging against starvation.

An entry's *effective* priority at time ``now`` is::

    priority + floor((now - enqueued_at) / aging_interval_s) * aging_step

so a waiting entry gains ``aging_step`` every ``aging_interval_s`` seconds and a low priority cannot
starve behind a steady stream of higher ones. :meth:`TaskQueue.pop` returns the entry with the
highest effective priority; equal effective priorities go to the earlier push.

Clock values are passed in (no clock is read here). The clock is assumed monotonic; a value lower
than one seen before is treated as that earlier maximum (no time passes, ages never go negative).

How it is fast: entries live in one FIFO deque per distinct base priority. Within a bucket the head
is the oldest entry, so it has the bucket's highest effective priority and smallest sequence
number; only bucket heads compete. The heads sit in a heap keyed by the continuous bound
``priority - aging_step * enqueued_at / aging_interval_s`` (the effective priority before
flooring, minus a term common to all entries). A pop takes heads from the heap while their bound
can still reach the best exact effective priority found so far — usually one or two — so push
and pop are O(log B) for B distinct priorities, even when B is large. Cancellation marks an entry
dead (O(1)); dead entries are skipped lazily and compacted when they pile up.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["TaskQueue"]

T = TypeVar("T")

# Dead entries tolerated in a bucket, or stale heads in the heap, before compacting.
_COMPACT_SLACK = 64


@dataclass(eq=False, slots=True)
class _Entry(Generic[T]):
    task_id: str
    priority: int
    item: T
    enqueued_at: float
    seq: int
    alive: bool = True


class _Bucket(Generic[T]):
    """The entries of one base priority in push order. ``entries[0]`` is always alive."""

    __slots__ = ("entries", "live")

    def __init__(self) -> None:
        self.entries: deque[_Entry[T]] = deque()
        self.live = 0


# (-bound key, seq, entry); seq is unique, so entries are never compared.
_HeapItem = tuple[float, int, _Entry[T]]


class TaskQueue(Generic[T]):
    """Priority queue of ``(task_id, item)`` with FIFO ties and aging. Not thread-safe.

    ``aging_interval_s`` must be > 0 (``math.inf`` disables aging); ``aging_step`` must be an
    int >= 0 (0 also disables aging).
    """

    def __init__(self, aging_interval_s: float = 30.0, aging_step: int = 1) -> None:
        if isinstance(aging_interval_s, bool) or not aging_interval_s > 0:
            raise ValueError(f"aging_interval_s must be > 0, got {aging_interval_s!r}")
        if not isinstance(aging_step, int) or isinstance(aging_step, bool) or aging_step < 0:
            raise ValueError(f"aging_step must be an int >= 0, got {aging_step!r}")
        self._interval = float(aging_interval_s)
        self._step = aging_step
        self._aging = aging_step != 0 and math.isfinite(self._interval)
        self._buckets: dict[int, _Bucket[T]] = {}
        self._index: dict[str, _Entry[T]] = {}
        self._heap: list[_HeapItem[T]] = []
        self._stale = 0  # dead entries still in the heap
        self._seq = 0
        self._clock = -math.inf

    # ---------------------------------------------------------------- public API

    def __len__(self) -> int:
        """Number of queued (not popped, not removed) entries."""
        return len(self._index)

    def __contains__(self, task_id: object) -> bool:
        """True if ``task_id`` is queued."""
        return task_id in self._index

    def push(self, task_id: str, priority: int, item: T, now: float) -> None:
        """Queue ``item`` under ``task_id`` at ``now``. A queued ``task_id`` raises ValueError."""
        if task_id in self._index:
            raise ValueError(f"task {task_id!r} is already queued")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"priority must be an int, got {priority!r}")
        now = self._tick(now)
        self._seq += 1
        entry = _Entry(task_id, priority, item, now, self._seq)
        self._index[task_id] = entry
        bucket = self._buckets.get(priority)
        if bucket is None:  # a new bucket: its head competes in the heap
            bucket = self._buckets[priority] = _Bucket()
            self._heap_push(entry)
        bucket.entries.append(entry)
        bucket.live += 1

    def pop(self, now: float) -> tuple[str, T] | None:
        """Remove and return the entry with the highest effective priority (None if empty)."""
        entry = self._select(self._tick(now))
        if entry is None:
            return None
        # _select took entry's heap item out; entry is its bucket's head.
        del self._index[entry.task_id]
        entry.alive = False
        bucket = self._buckets[entry.priority]
        bucket.entries.popleft()
        bucket.live -= 1
        self._advance(entry.priority, bucket)
        return entry.task_id, entry.item

    def pop_batch(self, n: int, now: float) -> list[tuple[str, T]]:
        """Pop up to ``n`` entries, in the order :meth:`pop` would return them at ``now``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out: list[tuple[str, T]] = []
        for _ in range(min(n, len(self._index))):
            got = self.pop(now)
            if got is None:  # pragma: no cover - len() says there is one
                break
            out.append(got)
        return out

    def remove(self, task_id: str) -> T | None:
        """Remove ``task_id`` (e.g. cancelled) and return its item; None if it is not queued."""
        entry = self._index.pop(task_id, None)
        if entry is None:
            return None
        entry.alive = False
        bucket = self._buckets[entry.priority]
        bucket.live -= 1
        if bucket.entries[0] is entry:
            self._stale += 1  # its heap item is now stale
            self._advance(entry.priority, bucket)
            if self._stale > len(self._buckets) + _COMPACT_SLACK:
                self._rebuild_heap()
        else:
            dead = len(bucket.entries) - bucket.live
            if dead > _COMPACT_SLACK and dead > bucket.live:
                bucket.entries = deque(e for e in bucket.entries if e.alive)
        return entry.item

    def peek_priority(self, now: float) -> int | None:
        """Effective priority at ``now`` of the entry :meth:`pop` would return (None if empty)."""
        now = self._tick(now)
        entry = self._select(now)
        if entry is None:
            return None
        self._heap_push(entry)
        return self._effective(entry, now)

    def counts_by_priority(self) -> dict[int, int]:
        """Number of queued entries per base priority."""
        return {p: b.live for p, b in self._buckets.items()}

    # ---------------------------------------------------------------- internals

    def _tick(self, now: float) -> float:
        """Validate ``now`` and return the monotonic clock value to use."""
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        if now > self._clock:
            self._clock = float(now)
        return self._clock

    def _effective(self, entry: _Entry[T], now: float) -> int:
        if not self._aging:
            return entry.priority
        return entry.priority + math.floor((now - entry.enqueued_at) / self._interval) * self._step

    def _heap_push(self, entry: _Entry[T]) -> None:
        key = float(entry.priority)
        if self._aging:
            key -= self._step * entry.enqueued_at / self._interval
        heapq.heappush(self._heap, (-key, entry.seq, entry))

    def _advance(self, priority: int, bucket: _Bucket[T]) -> None:
        """After the head left: drop dead heads, put the new head in the heap or drop the bucket."""
        entries = bucket.entries
        while entries and not entries[0].alive:
            entries.popleft()
        if entries:
            self._heap_push(entries[0])
        else:
            del self._buckets[priority]

    def _rebuild_heap(self) -> None:
        self._heap = []
        self._stale = 0
        for bucket in self._buckets.values():
            self._heap_push(bucket.entries[0])

    def _select(self, now: float) -> _Entry[T] | None:
        """Take the winning head out of the heap and return it (other examined heads go back)."""
        heap = self._heap
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
            self._stale -= 1
        if not heap:
            return None
        best = heapq.heappop(heap)
        if not self._aging:
            return best[2]  # keys are exact priorities and seq breaks ties: the top wins
        interval, step = self._interval, self._step
        entry = best[2]
        best_eff = entry.priority + math.floor((now - entry.enqueued_at) / interval) * step
        # Heap keys and exact effective priorities come from different float expressions; this
        # margin (far above their rounding error, far below 1) only lets in a few extra heads.
        margin = 1e-9 + 1e-12 * abs(step * now / interval)
        losers: list[_HeapItem[T]] = []
        while heap:
            item = heap[0]
            entry = item[2]
            if not entry.alive:
                heapq.heappop(heap)
                self._stale -= 1
                continue
            # Upper bound of entry's effective priority; heap order is descending in it.
            if entry.priority + step * (now - entry.enqueued_at) / interval < best_eff - margin:
                break
            heapq.heappop(heap)
            eff = entry.priority + math.floor((now - entry.enqueued_at) / interval) * step
            if eff > best_eff or (eff == best_eff and item[1] < best[1]):
                losers.append(best)
                best, best_eff = item, eff
            else:
                losers.append(item)
        for item in losers:
            heapq.heappush(heap, item)
        return best[2]

"""One watcher for every tracked Slurm job: one query per poll, transitions to a callback.

The poll interval starts at ``min_interval_s`` after :meth:`JobWatcher.track` or a poll that saw a
change, and grows by ``backoff`` per quiet poll up to ``max_interval_s``. A job is reported
when first seen and whenever its state, raw state, exit code or signal changes; once it reports a
terminal state it is no longer tracked. A failing query or callback is logged and the loop goes
on (at the slower interval); the watcher never raises out of :meth:`JobWatcher.run`.

Persistence is the caller's: seed :class:`JobWatcher` with the job ids (and last known states)
it stored, and store what ``on_change`` reports. No Ray import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from rayinfra.slurm.states import JobState, merge_known

__all__ = ["JobQuery", "JobWatcher", "OnChange"]

log = logging.getLogger(__name__)


class JobQuery(Protocol):
    """What the watcher needs from the Slurm wrapper (:class:`~rayinfra.slurm.cli.AsyncSlurmCli`)."""

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The current state of each job id."""
        ...


OnChange = Callable[[JobState], Awaitable[None] | None]


class JobWatcher:
    """Polls every tracked job in one :meth:`JobQuery.query` call and reports transitions."""

    def __init__(
        self,
        query: JobQuery,
        on_change: OnChange,
        *,
        job_ids: Iterable[str] = (),
        known: Mapping[str, JobState] | None = None,
        min_interval_s: float = 0.5,
        max_interval_s: float = 30.0,
        backoff: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``job_ids`` are tracked from the start; ``known`` holds their last reported states
        (a job whose state has not changed since is not reported again)."""
        if not 0 < min_interval_s <= max_interval_s:
            raise ValueError("need 0 < min_interval_s <= max_interval_s")
        if backoff < 1:
            raise ValueError("backoff must be >= 1")
        self._query = query
        self._on_change = on_change
        self.min_interval_s = min_interval_s
        self.max_interval_s = max_interval_s
        self.backoff = backoff
        self._clock = clock
        self._tracked: dict[str, JobState | None] = {}
        for job_id in job_ids:
            self._tracked[job_id] = (known or {}).get(job_id)
        self._interval = min_interval_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_poll: float | None = None
        self.polls = 0

    @property
    def tracked(self) -> frozenset[str]:
        """The job ids polled now."""
        return frozenset(self._tracked)

    @property
    def interval_s(self) -> float:
        """Seconds until the next poll (after the last one)."""
        return self._interval

    def last_state(self, job_id: str) -> JobState | None:
        """The last state reported for a tracked job (None: not seen yet, or not tracked)."""
        return self._tracked.get(job_id)

    def track(self, job_id: str, known: JobState | None = None) -> None:
        """Watch ``job_id`` (a no-op if watched); polls soon and fast again."""
        if job_id not in self._tracked:
            self._tracked[job_id] = known
        self._interval = self.min_interval_s
        self._wake.set()

    def untrack(self, job_id: str) -> None:
        """Stop watching ``job_id`` (no-op if not watched)."""
        self._tracked.pop(job_id, None)

    async def poll_once(self) -> list[JobState]:
        """Query every tracked job once; report and return the jobs whose state changed.

        Raises what the query raises (the :meth:`run` loop logs it and backs off)."""
        ids = list(self._tracked)
        self._last_poll = self._clock()
        if not ids:
            return []
        self.polls += 1
        try:
            states = await self._query.query(ids)
        except Exception:
            self._slow_down()
            raise
        changed: list[JobState] = []
        for job_id in ids:
            if job_id not in self._tracked or job_id not in states:
                continue  # untracked while the query ran, or not answered
            before = self._tracked[job_id]
            now = merge_known(states[job_id], before)
            if before is not None and now.transition_key() == before.transition_key():
                continue
            self._tracked[job_id] = now
            changed.append(now)
        for state in changed:
            if state.terminal:
                self._tracked.pop(state.job_id, None)
            await self._report(state)
        if changed:
            self._interval = self.min_interval_s
        else:
            self._slow_down()
        return changed

    async def run(self) -> None:
        """Poll until :meth:`stop`: at once, then at the current interval, sooner after a
        :meth:`track` (never closer than ``min_interval_s``), idle while nothing is tracked."""
        self._stopping = False
        while not self._stopping:
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception:
                log.exception("slurm watcher: query of %d job(s) failed", len(self._tracked))
            if self._stopping:
                break
            timeout = self._interval if self._tracked else None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._stopping or self._last_poll is None:
                continue
            # woken by track(): still keep min_interval_s between two polls
            gap = self.min_interval_s - (self._clock() - self._last_poll)
            if gap > 0:
                await asyncio.sleep(gap)

    def stop(self) -> None:
        """Make :meth:`run` return after its current step."""
        self._stopping = True
        self._wake.set()

    def _slow_down(self) -> None:
        self._interval = min(self._interval * self.backoff, self.max_interval_s)

    async def _report(self, state: JobState) -> None:
        try:
            result = self._on_change(state)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("slurm watcher: on_change failed for job %s", state.job_id)

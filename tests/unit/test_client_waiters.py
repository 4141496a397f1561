"""``AgentInfra.wait_tasks`` leaves nothing registered once it returns, however it ends.

The bench's soak (a stream open, so the task feed is always current) waited for batches that
had mostly finished already: each was resolved by the current-state read, never by the feed,
and stayed in ``AgentInfra._waiters`` with its result for the life of the client (the client
process grew by ~100 MiB an hour; ``bench/client_leak.py`` ``mixed`` shows it per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from rayinfra import AgentInfra
from rayinfra.models import FROM_NOW, TaskStatus


class FeedTransport:
    """The task primitives ``wait_tasks`` uses, in memory: ``get`` answers the current states,
    ``changes`` long-polls a feed that :meth:`finish` appends to."""

    kind = "fake"

    def __init__(self) -> None:
        self.states: dict[str, TaskStatus] = {}
        self.feed: list[TaskStatus] = []
        self.news = asyncio.Event()

    def finish(self, task_id: str, *, on_feed: bool = True) -> None:
        st = TaskStatus(task_id=task_id, status="completed", result={"ok": True})
        self.states[task_id] = st
        if on_feed:
            self.feed.append(st)
            self.news.set()

    def pending(self, task_id: str) -> None:
        self.states[task_id] = TaskStatus(task_id=task_id, status="pending")

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get(
        self, task_ids: Sequence[str], finished_only: bool = False
    ) -> dict[str, TaskStatus | None]:
        found = {t: self.states.get(t) for t in task_ids}
        if finished_only:
            return {t: st for t, st in found.items() if st is None or st.terminal}
        return found

    async def changes(
        self, after_seq: int, task_ids: Sequence[str] | None, timeout_s: float, terminal_only: bool
    ) -> tuple[int, list[TaskStatus]]:
        if after_seq == FROM_NOW:
            return len(self.feed), []
        while len(self.feed) <= after_seq:
            self.news.clear()
            try:
                await asyncio.wait_for(self.news.wait(), timeout_s)
            except asyncio.TimeoutError:
                return len(self.feed), []
        wanted = set(task_ids) if task_ids is not None else None
        news = [s for s in self.feed[after_seq:] if wanted is None or s.task_id in wanted]
        return len(self.feed), news

    def events(self, *args: Any) -> AsyncIterator[dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError


@pytest.fixture
async def client() -> AsyncIterator[tuple[AgentInfra, FeedTransport]]:
    transport = FeedTransport()
    infra = AgentInfra(transport=transport)  # type: ignore[arg-type]
    await infra.start_async()
    yield infra, transport
    await infra.stop()


async def test_waits_for_tasks_already_finished_leave_no_waiter(
    client: tuple[AgentInfra, FeedTransport],
) -> None:
    infra, transport = client
    for n in range(20):  # finished before the wait (and before the feed's cursor)
        ids = [f"done-{n}-{i}" for i in range(50)]
        for t in ids:
            transport.finish(t, on_feed=False)
        done = await infra.wait_tasks(ids, timeout=5)
        assert [d["status"] for d in done] == ["completed"] * 50
    assert infra._waiters == {}


async def test_waits_resolved_by_the_feed_leave_no_waiter(
    client: tuple[AgentInfra, FeedTransport],
) -> None:
    infra, transport = client
    for n in range(20):
        ids = [f"feed-{n}-{i}" for i in range(10)]
        for t in ids:
            transport.pending(t)
        waiting = asyncio.create_task(infra.wait_tasks([*ids, ids[0]], timeout=5))
        await asyncio.sleep(0)
        for t in ids:
            transport.finish(t)
        assert len(await waiting) == 11
    assert infra._waiters == {}


async def test_a_timed_out_or_cancelled_wait_leaves_no_waiter(
    client: tuple[AgentInfra, FeedTransport],
) -> None:
    infra, transport = client
    transport.pending("slow")
    transport.finish("quick", on_feed=False)
    with pytest.raises(TimeoutError, match="1 task"):
        await infra.wait_tasks(["quick", "slow"], timeout=0.05)
    assert infra._waiters == {}
    waiting = asyncio.create_task(infra.wait_tasks(["quick", "slow"]))
    await asyncio.sleep(0.05)
    assert set(infra._waiters) == {"quick", "slow"}
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert infra._waiters == {}


async def test_concurrent_waits_for_one_task_keep_each_other(
    client: tuple[AgentInfra, FeedTransport],
) -> None:
    """One wait ending drops its own waiter, not another's for the same task."""
    infra, transport = client
    transport.pending("t")
    first = asyncio.create_task(infra.wait_tasks(["t"]))
    second = asyncio.create_task(infra.wait_tasks(["t"], timeout=5))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(infra._waiters["t"]) == 1
    transport.finish("t")
    assert (await second)[0]["status"] == "completed"
    assert infra._waiters == {}

"""``AgentInfra.wait_tasks`` leaves nothing registered once it returns, however it ends.

The bench's soak (a stream open, so the task feed is always current) waited for batches that
had mostly finished already: each was resolved by the current-state read, never by the feed,
and stayed in ``AgentInfra._waiters`` with its result for the life of the client (the client
process grew by ~100 MiB an hour; ``bench/client_leak.py`` ``mixed`` shows it per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import pytest

from rayinfra import AgentInfra
from rayinfra.models import FEED_IDS_SENT_MAX, FROM_NOW, TaskStatus, feed_filter


class FeedTransport:
    """The task primitives ``wait_tasks`` uses, in memory: ``get`` answers the current states,
    ``changes`` long-polls a feed that :meth:`finish` appends to."""

    kind = "fake"

    def __init__(self) -> None:
        self.states: dict[str, TaskStatus] = {}
        self.feed: list[TaskStatus] = []
        self.news = asyncio.Event()
        self.decoded: list[str] = []  # the ids of the states the feed answered with

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
        self,
        after_seq: int,
        task_ids: Sequence[str] | None,
        timeout_s: float,
        terminal_only: bool,
        keep: Collection[str] | None = None,
    ) -> tuple[int, list[TaskStatus]]:
        if after_seq == FROM_NOW:
            return len(self.feed), []
        sent = task_ids
        # as the scheduler's poll: answers once a state of the ids it was sent is on the feed
        while not (news := [s for s in self.feed[after_seq:] if sent is None or s.task_id in sent]):
            self.news.clear()
            try:
                await asyncio.wait_for(self.news.wait(), timeout_s)
            except asyncio.TimeoutError:
                return len(self.feed), []
        news = [s for s in news if keep is None or s.task_id in keep]  # as the transports do
        self.decoded += [s.task_id for s in news]
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
    assert set(infra._waiters) == {"slow"}  # "quick": resolved by the wait's read, dropped
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
    assert infra._waiters["t"] is not None and not isinstance(infra._waiters["t"], list)
    transport.finish("t")
    assert (await second)[0]["status"] == "completed"
    assert infra._waiters == {}


async def test_a_large_wait_decodes_from_the_feed_only_what_its_read_left(
    client: tuple[AgentInfra, FeedTransport],
) -> None:
    """Tasks that ended after the feed's cursor but before the wait are resolved by the wait's
    read; the feed, matching a large id set where its answer arrives, does not decode them
    again (each would cost the client a second status and result dict)."""
    infra, transport = client
    transport.finish("warm")
    await infra.wait_tasks(["warm"], timeout=5)  # the feed runs; its cursor is here
    ids = [f"big-{i}" for i in range(4 * FEED_IDS_SENT_MAX)]
    early, late = ids[: len(ids) // 2], ids[len(ids) // 2 :]  # late: too many to send
    for t in early:
        transport.finish(t)
    for t in late:
        transport.pending(t)
    waiting = asyncio.create_task(infra.wait_tasks(ids, timeout=5))
    await asyncio.sleep(0.05)
    for t in late:
        transport.finish(t)
    done = await waiting
    assert [d["task_id"] for d in done] == ids
    assert all(d["status"] == "completed" for d in done)
    assert sorted(transport.decoded) == sorted(late)
    assert infra._waiters == {}


def test_feed_filter_sends_a_small_set_and_matches_a_large_one_on_arrival() -> None:
    small = [f"t{i}" for i in range(FEED_IDS_SENT_MAX)]
    assert feed_filter(None) == (None, None)
    assert feed_filter(small) == (small, None)
    waiters = dict.fromkeys([*small, "one-more"])
    sent, matched = feed_filter(waiters.keys())
    assert sent is None and matched is not None
    del waiters["t0"]  # a live view: what the waiters dropped meanwhile is not matched
    assert "t0" not in matched and "one-more" in matched


class _Scheduler:
    """An ``ActorCaller`` answering the scheduler's ``changes`` with finished-task event rows
    (filtered by the ids it is sent, as the scheduler's long-poll is); records what it was sent."""

    def __init__(self, ids: Sequence[str]) -> None:
        data = '{"class":"c","priority":0,"status":"completed","attempts":1,"result":null}'
        self.rows = [(n + 1, "task_completed", t, data, 0) for n, t in enumerate(ids)]
        self.sent: list[Sequence[str] | None] = []

    async def call(
        self, actor: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        assert (actor, method) == ("scheduler", "changes")
        ids = args[1]
        self.sent.append(ids)
        return len(self.rows), [r for r in self.rows if ids is None or r[2] in ids]


async def test_the_actor_transport_sends_the_ids_it_is_given_and_decodes_only_what_it_keeps() -> (
    None
):
    """The gateway's PollTaskChanges passes a caller's ids on, however many: the scheduler's
    long-poll waits for those tasks, not for any task. ``keep`` (a client feed's large set)
    is matched as the answer arrives, before decoding."""
    from rayinfra.control import ControlPlane

    ids = [f"t{i}" for i in range(3 * FEED_IDS_SENT_MAX)]
    sched = _Scheduler(ids)
    plane = ControlPlane(caller=sched)  # type: ignore[arg-type]
    asked = ids[: 2 * FEED_IDS_SENT_MAX]
    _, states = await plane.changes(0, asked, 1.0, True)
    assert sched.sent == [asked]
    assert [st.task_id for st in states] == asked
    _, states = await plane.changes(0, None, 1.0, True, keep={"t5", "t7"})
    assert sched.sent[-1] is None
    assert [(st.task_id, st.status) for st in states] == [("t5", "completed"), ("t7", "completed")]

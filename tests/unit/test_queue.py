"""Unit tests for rayinfra.scheduling.queue: priority order, FIFO ties, aging, cancellation.

Clock values are plain numbers (a fake clock): the queue never reads time itself.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayinfra.scheduling.queue import TaskQueue


def drain(q: TaskQueue[str], now: float) -> list[str]:
    out: list[str] = []
    while (got := q.pop(now)) is not None:
        out.append(got[0])
    return out


def test_empty_queue() -> None:
    q: TaskQueue[str] = TaskQueue()
    assert len(q) == 0 and not q
    assert q.pop(0.0) is None
    assert q.pop_batch(5, 0.0) == []
    assert q.peek_priority(0.0) is None
    assert q.counts_by_priority() == {}
    assert "x" not in q
    assert q.remove("x") is None


def test_higher_priority_first_fifo_within_a_priority() -> None:
    q: TaskQueue[str] = TaskQueue()
    for i, (tid, prio) in enumerate(
        [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -3), ("f", 10), ("g", 0)]
    ):
        q.push(tid, prio, f"item-{tid}", now=float(i) * 0.001)
    assert len(q) == 7
    assert q.pop(0.01) == ("f", "item-f")
    assert drain(q, 0.01) == ["b", "d", "a", "c", "g", "e"]


def test_same_priority_same_time_is_fifo_by_push_order() -> None:
    q: TaskQueue[int] = TaskQueue()
    ids = [f"t{i}" for i in range(50)]
    for i, tid in enumerate(ids):
        q.push(tid, 1, i, now=100.0)
    assert [tid for tid, _ in q.pop_batch(50, 100.0)] == ids


def test_aging_lets_an_old_low_priority_item_overtake() -> None:
    q: TaskQueue[str] = TaskQueue(aging_interval_s=30.0, aging_step=1)
    q.push("old-low", 0, "x", now=0.0)
    q.push("high-1", 3, "x", now=0.0)
    # At t=90 "old-low" has aged 3 steps: effective 3, tied with a fresh priority-3 item pushed
    # later, and the tie goes to the earlier push. "high-1" (same age) is effective 6 and wins.
    q.push("high-2", 3, "x", now=90.0)
    assert q.peek_priority(90.0) == 6
    assert q.pop(90.0) == ("high-1", "x")
    assert q.peek_priority(90.0) == 3
    assert q.pop(90.0) == ("old-low", "x")
    assert q.pop(90.0) == ("high-2", "x")


def test_aging_boundary_is_a_floor() -> None:
    q: TaskQueue[str] = TaskQueue(aging_interval_s=10.0, aging_step=2)
    q.push("low", 0, "x", now=0.0)
    q.push("high", 4, "x", now=19.0)
    # At 19.9 low has aged floor(19.9/10)=1 step (effective 2) < 4: high first.
    assert q.peek_priority(19.9) == 4
    # At 20.0 low has aged 2 steps (effective 4) == high's 4 and was pushed first: low wins.
    assert q.peek_priority(20.0) == 4
    assert q.pop(20.0) == ("low", "x")


def test_newer_high_priority_items_lose_to_an_aged_item_only_after_enough_time() -> None:
    q: TaskQueue[str] = TaskQueue(aging_interval_s=1.0)
    q.push("low", 0, "x", now=0.0)
    popped: list[tuple[float, str]] = []
    for t in range(1, 20):
        q.push(f"h{t}", 5, "x", now=float(t))
        got = q.pop(float(t))
        assert got is not None
        popped.append((float(t), got[0]))
    low_at = next(t for t, tid in popped if tid == "low")
    assert low_at == 5.0  # effective priority 0 + 5 steps ties the fresh 5 and wins the tie
    assert [tid for t, tid in popped if t < low_at] == ["h1", "h2", "h3", "h4"]


def test_no_aging_when_step_is_zero_or_interval_infinite() -> None:
    for q in (TaskQueue[str](aging_step=0), TaskQueue[str](aging_interval_s=math.inf)):
        q.push("low", 0, "x", now=0.0)
        q.push("high", 1, "x", now=1e9)
        assert q.peek_priority(1e12) == 1
        assert drain(q, 1e12) == ["high", "low"]


def test_remove_returns_item_and_removed_ids_are_never_popped() -> None:
    q: TaskQueue[str] = TaskQueue()
    for i in range(10):
        q.push(f"t{i}", i % 3, f"item{i}", now=0.0)
    assert q.remove("t4") == "item4"  # middle of a bucket
    assert q.remove("t2") == "item2"  # head of the priority-2 bucket
    assert q.remove("t2") is None
    assert q.remove("missing") is None
    assert "t4" not in q and "t2" not in q and "t5" in q
    assert len(q) == 8
    assert q.counts_by_priority() == {0: 4, 1: 2, 2: 2}
    order = drain(q, 0.0)
    assert order == ["t5", "t8", "t1", "t7", "t0", "t3", "t6", "t9"]


def test_removing_every_entry_of_a_priority_drops_it() -> None:
    q: TaskQueue[str] = TaskQueue()
    q.push("a", 7, "x", now=0.0)
    q.push("b", 7, "x", now=0.0)
    q.push("c", 1, "x", now=0.0)
    assert q.remove("b") == "x" and q.remove("a") == "x"
    assert q.counts_by_priority() == {1: 1}
    assert q.peek_priority(0.0) == 1
    assert q.pop(0.0) == ("c", "x")
    assert q.pop(0.0) is None


def test_a_removed_id_can_be_pushed_again_and_goes_to_the_back() -> None:
    q: TaskQueue[str] = TaskQueue()
    q.push("a", 0, "first", now=0.0)
    q.push("b", 0, "x", now=0.0)
    q.remove("a")
    q.push("a", 0, "second", now=0.0)
    assert q.pop_batch(2, 0.0) == [("b", "x"), ("a", "second")]


def test_duplicate_push_raises_and_leaves_the_queue_unchanged() -> None:
    q: TaskQueue[str] = TaskQueue()
    q.push("a", 0, "x", now=0.0)
    with pytest.raises(ValueError, match="'a' is already queued"):
        q.push("a", 5, "y", now=1.0)
    assert len(q) == 1 and q.counts_by_priority() == {0: 1}
    assert q.pop(1.0) == ("a", "x")
    q.push("a", 5, "y", now=2.0)  # popped ids may be queued again
    assert q.pop(2.0) == ("a", "y")


def test_pop_batch() -> None:
    q: TaskQueue[int] = TaskQueue()
    for i in range(5):
        q.push(f"t{i}", -i, i, now=0.0)
    assert q.pop_batch(0, 0.0) == []
    assert q.pop_batch(2, 0.0) == [("t0", 0), ("t1", 1)]
    assert q.pop_batch(10, 0.0) == [("t2", 2), ("t3", 3), ("t4", 4)]
    assert q.pop_batch(3, 0.0) == []
    with pytest.raises(ValueError):
        q.pop_batch(-1, 0.0)


def test_counts_by_priority_and_len_track_push_pop_remove() -> None:
    q: TaskQueue[None] = TaskQueue()
    for i in range(6):
        q.push(f"t{i}", i % 2, None, now=0.0)
    assert q.counts_by_priority() == {0: 3, 1: 3} and len(q) == 6
    q.pop(0.0)
    q.remove("t0")
    assert q.counts_by_priority() == {0: 2, 1: 2} and len(q) == 4


def test_peek_priority_does_not_consume() -> None:
    q: TaskQueue[str] = TaskQueue(aging_interval_s=10.0)
    q.push("a", 2, "x", now=0.0)
    assert q.peek_priority(0.0) == 2
    assert q.peek_priority(35.0) == 5
    assert len(q) == 1
    assert q.pop(35.0) == ("a", "x")


def test_clock_going_backwards_counts_as_no_time_passing() -> None:
    q: TaskQueue[str] = TaskQueue(aging_interval_s=1.0)
    q.push("a", 0, "x", now=100.0)
    q.push("b", 0, "x", now=50.0)  # treated as pushed at 100.0: FIFO order and ages stay sane
    assert q.peek_priority(10.0) == 0
    assert q.peek_priority(103.0) == 3
    assert drain(q, 0.0) == ["a", "b"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"aging_interval_s": 0.0}, ValueError),
        ({"aging_interval_s": -1.0}, ValueError),
        ({"aging_interval_s": math.nan}, ValueError),
        ({"aging_step": -1}, ValueError),
        ({"aging_step": 1.5}, ValueError),
    ],
)
def test_bad_construction(kwargs: dict[str, float], error: type[Exception]) -> None:
    with pytest.raises(error):
        TaskQueue(**kwargs)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    q: TaskQueue[str] = TaskQueue()
    with pytest.raises(ValueError):
        q.push("a", 0, "x", now=math.nan)
    with pytest.raises(TypeError):
        q.push("a", 1.5, "x", now=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        q.pop(math.inf)
    assert len(q) == 0


def test_many_entries_are_fast() -> None:
    """100k pushes and pops with a few priorities, 20k with all-distinct priorities.

    Not a timed assert (benchmarks live in bench/). Both run in well under a second; a pop that
    scanned every distinct priority would make the second case take minutes.
    """
    rng = random.Random(7)
    for n, distinct in ((100_000, 5), (20_000, 2_000_000)):
        q: TaskQueue[int] = TaskQueue(aging_interval_s=30.0)
        for i in range(n):
            q.push(f"t{i}", rng.randrange(distinct) - distinct // 2, i, now=i * 0.001)
        assert len(q) == n
        seen = 0
        now = n * 0.001
        while q.pop(now) is not None:
            seen += 1
            now += 0.0001
        assert seen == n and len(q) == 0


def test_many_removals_do_not_leak() -> None:
    q: TaskQueue[int] = TaskQueue()
    for round_ in range(50):
        for i in range(1000):
            q.push(f"r{round_}-{i}", i % 3, i, now=float(round_))
        for i in range(1000):
            assert q.remove(f"r{round_}-{i}") == i
    assert len(q) == 0 and q.counts_by_priority() == {}
    # internal compaction keeps the bookkeeping bounded
    assert len(q._heap) <= 100 and not q._buckets


# ------------------------------------------------------------------ properties


@dataclass
class Model:
    """Brute force reference: scan everything, take max (effective priority, -push sequence)."""

    interval: float
    step: int
    entries: dict[str, tuple[int, float, int]] = field(default_factory=dict)
    seq: int = 0
    clock: float = -math.inf

    def tick(self, now: float) -> float:
        self.clock = max(self.clock, now)
        return self.clock

    def effective(self, tid: str, now: float) -> int:
        prio, at, _ = self.entries[tid]
        return prio + math.floor((now - at) / self.interval) * self.step

    def best(self, now: float) -> str | None:
        if not self.entries:
            return None
        return max(self.entries, key=lambda t: (self.effective(t, now), -self.entries[t][2]))


ops = st.lists(
    st.tuples(
        st.sampled_from(["push", "push", "push", "pop", "remove", "peek"]),
        st.integers(0, 15),  # task id number
        st.integers(-4, 4),  # priority
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0, 10.0, -2.0]),  # clock advance (may go back)
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops, st.sampled_from([1.0, 2.5, 7.0]), st.integers(0, 3))
def test_matches_brute_force_reference(
    operations: list[tuple[str, int, int, float]], interval: float, step: int
) -> None:
    q: TaskQueue[int] = TaskQueue(aging_interval_s=interval, aging_step=step)
    model = Model(interval, step)
    now = 0.0
    for op, num, prio, advance in operations:
        now += advance
        tid = f"t{num}"
        if op == "push":
            if tid in model.entries:
                with pytest.raises(ValueError):
                    q.push(tid, prio, num, now)
                continue
            model.seq += 1
            model.entries[tid] = (prio, model.tick(now), model.seq)
            q.push(tid, prio, num, now)
        elif op == "pop":
            expected = model.best(model.tick(now))
            got = q.pop(now)
            assert (got[0] if got else None) == expected
            if expected is not None:
                del model.entries[expected]
        elif op == "remove":
            present = model.entries.pop(tid, None) is not None
            assert q.remove(tid) == (num if present else None)
        else:
            t = model.tick(now)
            best = model.best(t)
            assert q.peek_priority(now) == (None if best is None else model.effective(best, t))
        assert len(q) == len(model.entries)
        counts: dict[int, int] = {}
        for prio_, _, _ in model.entries.values():
            counts[prio_] = counts.get(prio_, 0) + 1
        assert q.counts_by_priority() == counts
        assert all(t in q for t in model.entries)


@settings(max_examples=50, deadline=None)
@given(
    gap=st.integers(1, 40),  # high - low
    step=st.integers(1, 3),
    interval_ticks=st.integers(1, 20),  # aging interval in ticks
    dt=st.integers(1, 5),  # seconds per tick
    per_tick=st.integers(1, 3),  # high pushes (and pops) per tick
    backlog=st.integers(0, 20),  # high items already queued when the low one arrives
)
def test_low_priority_is_not_starved_by_a_steady_high_stream(
    gap: int, step: int, interval_ticks: int, dt: int, per_tick: int, backlog: int
) -> None:
    """A low item waiting behind a stream of fresh high items (as many pushed as popped per tick)
    is popped no later than ``bound`` and no earlier than aging allows."""
    interval = float(interval_ticks * dt)
    high, low = 10, 10 - gap
    q: TaskQueue[str] = TaskQueue(aging_interval_s=interval, aging_step=step)
    for i in range(backlog):
        q.push(f"b{i}", high, "x", now=0.0)
    q.push("low", low, "x", now=0.0)
    # The backlog keeps the oldest high item at most (backlog/per_tick + 1) ticks old; low then
    # needs ceil(gap/step) steps to tie a fresh high item, plus slack for the backlog's own aging.
    steps_needed = math.ceil(gap / step)
    bound = (steps_needed + 2) * interval + (backlog // per_tick + 2) * dt
    popped_at = None
    tick = 0
    while popped_at is None:
        tick += 1
        now = float(tick * dt)
        assert now <= bound + dt, "low-priority item starved"
        for j in range(per_tick):
            q.push(f"h{tick}-{j}", high, "x", now=now)
        for got in q.pop_batch(per_tick, now):
            if got[0] == "low":
                popped_at = now
    # It did wait: popping it earlier would have skipped a fresh high item it could not yet tie.
    assert popped_at >= steps_needed * interval
    assert popped_at <= bound

"""Adaptive limiter: config validation, Gradient2-style sample-by-sample checks, and a
closed-loop simulation against a downstream with a capacity knee (fake clock)."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from rayinfra.scheduling.limiter import (
    AdaptiveLimiter,
    LimiterConfig,
    Outcome,
    default_queue_size,
)

BASE_S = 0.010  # no-load latency of the fake downstream


def exact(**kw: Any) -> AdaptiveLimiter:
    """A limiter whose updates are plain Gradient2 arithmetic (no slow start, no checks)."""
    return AdaptiveLimiter(LimiterConfig(slow_start=False, baseline_check=False, **kw))


def feed(lim: AdaptiveLimiter, latency: float, inflight: int, n: int) -> list[float]:
    """Feed ``n`` identical samples; return the estimate after each."""
    out = []
    for _ in range(n):
        lim.on_sample(latency, inflight)
        out.append(lim.estimated_limit)
    return out


# --------------------------------------------------------------------------- config


def test_defaults_are_valid_and_pinned() -> None:
    cfg = LimiterConfig()
    assert (cfg.initial_limit, cfg.min_limit, cfg.max_limit) == (4, 1, 64)
    assert (cfg.smoothing, cfg.long_window, cfg.backoff_ratio) == (0.2, 600, 0.9)
    assert cfg.rtt_tolerance == 1.0
    assert cfg.queue_size is None
    assert default_queue_size(1) == default_queue_size(64) == 0.5
    lim = AdaptiveLimiter(cfg)
    assert lim.limit == 4 and lim.estimated_limit == 4.0
    assert (lim.min_limit, lim.max_limit) == (1, 64)


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"min_limit": 0}, "min_limit"),
        ({"min_limit": 5, "initial_limit": 5, "max_limit": 4}, "max_limit"),
        ({"initial_limit": 0}, "initial_limit"),
        ({"initial_limit": 65}, "initial_limit"),
        ({"min_limit": 3, "initial_limit": 2}, "initial_limit"),
        ({"initial_limit": 4.0}, "initial_limit"),
        ({"max_limit": True}, "max_limit"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"smoothing": math.nan}, "smoothing"),
        ({"rtt_tolerance": 0.9}, "rtt_tolerance"),
        ({"rtt_tolerance": math.inf}, "rtt_tolerance"),
        ({"rtt_tolerance": math.nan}, "rtt_tolerance"),
        ({"long_window": 0}, "long_window"),
        ({"backoff_ratio": 0.0}, "backoff_ratio"),
        ({"backoff_ratio": 1.0}, "backoff_ratio"),
        ({"queue_size": 3}, "queue_size"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=rf"LimiterConfig\.{field_name}\b"):
        LimiterConfig(**kwargs)


def test_config_accepts_edges() -> None:
    LimiterConfig(min_limit=1, initial_limit=1, max_limit=1, smoothing=1.0, long_window=1)
    LimiterConfig(rtt_tolerance=1.0, backoff_ratio=0.5, queue_size=lambda n: 0.0)


@pytest.mark.parametrize("latency", [-0.001, math.nan, math.inf])
def test_bad_latency_rejected(latency: float) -> None:
    with pytest.raises(ValueError, match="latency_s"):
        AdaptiveLimiter(LimiterConfig()).on_sample(latency, 1)


def test_bad_inflight_rejected() -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    with pytest.raises(ValueError, match="inflight"):
        lim.on_sample(0.01, -1)
    with pytest.raises(ValueError, match="inflight"):
        lim.available(-1)


def test_zero_latency_is_accepted() -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    for _ in range(20):
        lim.on_sample(0.0, 4)
    assert 1 <= lim.limit <= 64
    assert lim.snapshot()["long_rtt"] > 0.0


# ------------------------------------------------------- sample by sample (Gradient2)


def test_long_rtt_warmup_is_the_mean_of_the_first_ten_samples() -> None:
    lim = exact(initial_limit=10)
    rtts = [0.010, 0.012, 0.008, 0.011, 0.009, 0.010, 0.013, 0.007, 0.010, 0.010]
    for rtt in rtts:
        lim.on_sample(rtt, 10)
    assert lim.snapshot()["long_rtt"] == pytest.approx(sum(rtts) / len(rtts))


def test_flat_latency_saturated_increases_by_the_smoothed_headroom() -> None:
    # gradient 1 => new = est + queue_size; one sample weighs smoothing / est.
    lim = exact(initial_limit=10)
    assert lim.on_sample(0.010, 10) == 10
    assert lim.estimated_limit == pytest.approx(10 + 0.5 * 0.2 / 10)
    est = feed(lim, 0.010, 10, 109)
    assert all(b > a for a, b in itertools.pairwise(est))
    # smoothing * queue_size = 0.1 task per round of ~10 samples: +1 in ~105 samples
    assert est[98] == pytest.approx(10.95, abs=0.02)
    assert lim.limit == 11


def test_custom_queue_size_and_smoothing() -> None:
    lim = exact(initial_limit=8, smoothing=0.5, queue_size=lambda n: 0.25 * n)
    lim.on_sample(0.010, 8)
    assert lim.estimated_limit == pytest.approx(8 + (0.25 * 8) * 0.5 / 8)


def test_slow_start_grows_per_sample_until_congestion() -> None:
    lim = AdaptiveLimiter(LimiterConfig(initial_limit=4))
    est = feed(lim, 0.010, 4, 10)
    assert est == pytest.approx([4 + 0.1 * (i + 1) for i in range(10)])  # + smoothing * 0.5
    assert lim.limit == 5  # 4 + 10 * 0.1 in floating point is 4.999...: still 5
    assert lim.snapshot()["slow_start"] == 1.0


def test_latency_doubling_decreases_with_the_gradient_formula() -> None:
    lim = exact(initial_limit=20)
    feed(lim, 0.010, 20, 30)
    before = lim.estimated_limit
    assert before == pytest.approx(20 + 30 * 0.005, abs=0.01)
    seen_decrease = False
    for _ in range(40):
        snap = lim.snapshot()
        est = lim.estimated_limit
        lim.on_sample(0.020, lim.limit)
        after = lim.snapshot()
        # Recompute Gradient2 from the published state: gradient clamped to [0.5, 1].
        tolerated = after["long_rtt"] * (1 + 2 * after["rtt_deviation"] / math.sqrt(est))
        gradient = max(0.5, min(1.0, tolerated / after["short_rtt"]))
        weight = 0.2 / est
        expected = est * (1 - weight) + (est * gradient + 0.5) * weight
        assert lim.estimated_limit == pytest.approx(expected, rel=1e-12)
        assert after["long_rtt"] <= snap["long_rtt"] * (1 + 1e-12)  # congestion is not absorbed
        seen_decrease |= gradient < 1.0
    assert seen_decrease
    assert lim.estimated_limit < before - 1.0


def test_gradient_is_clamped_at_one_half() -> None:
    lim = exact(initial_limit=20, smoothing=1.0)
    feed(lim, 0.010, 20, 20)
    # A huge latency moves the short RTT far above tolerance: gradient clamps at 0.5.
    est = lim.estimated_limit
    lim.on_sample(10.0, 20)
    weight = 1.0 / est
    assert lim.estimated_limit == pytest.approx(est * (1 - weight) + (est * 0.5 + 0.5) * weight)


def test_app_limited_does_not_move_the_limit() -> None:
    lim = exact(initial_limit=10)
    feed(lim, 0.010, 4, 100)  # 4 < 10 / 2
    assert lim.estimated_limit == 10.0
    feed(lim, 0.030, 4, 100)  # not even when latency triples
    assert lim.estimated_limit == 10.0
    feed(lim, 0.010, 4, 30)
    assert lim.estimated_limit == 10.0
    lim.on_sample(0.010, 5)  # 5 == 10 / 2 counts as using the limit
    assert lim.estimated_limit > 10.0


def test_long_rtt_ignores_latency_above_the_gate() -> None:
    lim = exact(initial_limit=10)
    feed(lim, 0.010, 1, 10)
    feed(lim, 0.015, 1, 500)
    assert lim.snapshot()["long_rtt"] == pytest.approx(0.010)


def test_long_rtt_follows_lower_latency_and_decays() -> None:
    lim = exact(initial_limit=4)
    feed(lim, 0.010, 1, 10)
    feed(lim, 0.004, 1, 40)
    assert lim.snapshot()["long_rtt"] < 0.005


@pytest.mark.parametrize("outcome", [Outcome.FAILURE, Outcome.INVALID])
def test_failure_is_counted_and_ignored(outcome: Outcome) -> None:
    lim = exact(initial_limit=10)
    feed(lim, 0.010, 10, 20)
    before = lim.snapshot()
    for _ in range(50):
        assert lim.on_sample(0.0001, 10, outcome) == lim.limit
    after = lim.snapshot()
    assert after["failures"] == 50
    for key in ("estimated_limit", "long_rtt", "short_rtt", "decreases"):
        assert after[key] == before[key]
    assert after["samples"] == before["samples"] + 50


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.RESOURCE])
def test_timeout_and_resource_cut_multiplicatively(outcome: Outcome) -> None:
    lim = AdaptiveLimiter(LimiterConfig(initial_limit=20, min_limit=2))
    feed(lim, 0.010, 20, 5)
    est = lim.estimated_limit
    short = lim.snapshot()["short_rtt"]
    assert lim.on_sample(30.0, 20, outcome) == int(est * 0.9)
    assert lim.estimated_limit == pytest.approx(est * 0.9)
    assert lim.snapshot()["short_rtt"] == short  # a timeout's duration is not a sample
    assert lim.snapshot()["slow_start"] == 0.0
    for _ in range(60):
        lim.on_sample(30.0, 20, outcome)
    assert lim.limit == 2 and lim.estimated_limit == 2.0
    assert lim.snapshot()["decreases"] == 61


def test_bounds_respected_sample_by_sample() -> None:
    lim = AdaptiveLimiter(LimiterConfig(initial_limit=6, min_limit=3, max_limit=8))
    for _ in range(1000):  # flat latency: grows to the ceiling, not past it
        lim.on_sample(0.010, lim.limit)
        assert 3 <= lim.limit <= 8 and 3.0 <= lim.estimated_limit <= 8.0
    assert lim.limit == 8
    for _ in range(2000):  # capacity 1: latency proportional to concurrency
        lim.on_sample(0.010 * lim.limit, lim.limit)
        assert 3 <= lim.limit <= 8 and 3.0 <= lim.estimated_limit <= 8.0
    assert lim.limit == 3


def test_set_bounds_clamps_and_validates() -> None:
    lim = exact(initial_limit=20, max_limit=32)
    lim.set_bounds(max_limit=8)  # e.g. Ray reports 8 free CPUs
    assert (lim.limit, lim.estimated_limit, lim.max_limit) == (8, 8.0, 8)
    feed(lim, 0.010, 8, 200)
    assert lim.limit == 8
    lim.set_bounds(min_limit=12)  # the ceiling wins while it is lower
    assert (lim.min_limit, lim.limit) == (8, 8)
    lim.set_bounds(max_limit=16)
    assert (lim.min_limit, lim.limit) == (12, 12)
    lim.set_bounds(min_limit=1, max_limit=64)
    assert lim.limit == 12
    with pytest.raises(ValueError, match="min_limit"):
        lim.set_bounds(min_limit=0)
    with pytest.raises(ValueError, match="max_limit"):
        lim.set_bounds(max_limit=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_limit"):
        lim.set_bounds(min_limit=5, max_limit=4)


def test_available() -> None:
    lim = exact(initial_limit=6)
    assert lim.available(0) == 6
    assert lim.available(4) == 2
    assert lim.available(6) == 0
    assert lim.available(9) == 0


def test_snapshot_keys() -> None:
    snap = AdaptiveLimiter(LimiterConfig()).snapshot()
    for key in ("limit", "estimated_limit", "long_rtt", "short_rtt", "samples", "decreases"):
        assert isinstance(snap[key], float)
    assert snap["samples"] == 0.0 and snap["long_rtt"] == 0.0


# ------------------------------------------------------------ closed-loop simulation


@dataclass
class Trace:
    limits: list[int] = field(default_factory=list)  # limit after each completion
    times: list[float] = field(default_factory=list)  # the fake clock at each completion
    over_limit_events: int = 0  # completions after which in-flight > limit
    admitted_over_limit: int = 0  # admissions beyond the limit (must stay 0)


def simulate(
    lim: AdaptiveLimiter,
    samples: int,
    capacity: Callable[[int], int],
    *,
    base: Callable[[int], float] = lambda i: BASE_S,
    jitter: float = 0.03,
    seed: int = 1,
    demand: int | None = None,
    outcome: Callable[[int], Outcome] = lambda i: Outcome.SUCCESS,
) -> Trace:
    """Event-driven closed loop on a fake clock.

    The downstream serves ``capacity(i)`` tasks at ``base`` latency (+- ``jitter``);
    beyond that latency grows as ``base * inflight / capacity`` (queueing), fixed at
    admission.  The client always has work (or ``demand`` tasks at most) and tops
    up to ``lim.limit`` after every completion.
    """
    rng = random.Random(seed)
    heap: list[tuple[float, int, float]] = []
    trace = Trace()
    inflight = 0
    seq = 0

    def admit(now: float, i: int) -> None:
        nonlocal inflight, seq
        want = lim.limit if demand is None else min(lim.limit, demand)
        while inflight < want:
            if lim.available(inflight) <= 0:
                trace.admitted_over_limit += 1
            inflight += 1
            latency = (
                base(i) * (1 + rng.uniform(-jitter, jitter)) * max(1.0, inflight / capacity(i))
            )
            seq += 1
            heapq.heappush(heap, (now + latency, seq, latency))

    admit(0.0, 0)
    for i in range(samples):
        now, _, latency = heapq.heappop(heap)
        lim.on_sample(latency, inflight, outcome(i))
        inflight -= 1
        if inflight > lim.limit:
            trace.over_limit_events += 1
        admit(now, i)
        trace.limits.append(lim.limit)
        trace.times.append(now)
    return trace


def constant(n: int) -> Callable[[int], int]:
    return lambda i: n


def settles(limits: list[int], lo: int, hi: int) -> int | None:
    """Index from which every limit stays within [lo, hi], or None."""
    for i in range(len(limits) - 1, -1, -1):
        if not lo <= limits[i] <= hi:
            return i + 1 if i + 1 < len(limits) else None
    return 0


WARMUP = 1500
MEASURE = 3000


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("knee", [4, 8, 16, 32])
def test_limit_settles_at_the_capacity_knee(knee: int, seed: int) -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    trace = simulate(lim, WARMUP + MEASURE, lambda i: knee, seed=seed)
    tail = trace.limits[WARMUP:]
    assert knee - 2 <= min(tail) and max(tail) <= knee + 2, (min(tail), max(tail))
    # measured: [N-1, N+1] for every N and seed; the mean sits just above the knee
    assert knee - 0.5 <= sum(tail) / len(tail) <= knee + 1.0
    assert trace.over_limit_events == 0 and trace.admitted_over_limit == 0
    assert lim.snapshot()["long_rtt"] == pytest.approx(BASE_S, rel=0.02)


@pytest.mark.parametrize("knee", [8, 32])
def test_limit_settles_with_ten_percent_jitter(knee: int) -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    trace = simulate(lim, WARMUP + MEASURE, lambda i: knee, jitter=0.10, seed=3)
    tail = trace.limits[WARMUP:]
    assert knee - 2 <= min(tail) and max(tail) <= knee + 2, (min(tail), max(tail))
    assert trace.over_limit_events == 0


def test_capacity_drop_is_followed() -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    switch = 2500
    trace = simulate(lim, switch + 2500, lambda i: 16 if i < switch else 8)
    before = trace.limits[switch - 1000 : switch]
    assert min(before) >= 14 and max(before) <= 18
    after = trace.limits[switch:]
    start = settles(after, 6, 10)
    assert start is not None and start <= 250, start  # measured: 97-127 samples
    assert trace.over_limit_events == 0


def test_capacity_rise_is_followed() -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    switch = 1500
    trace = simulate(lim, switch + 3000, lambda i: 8 if i < switch else 32)
    start = settles(trace.limits[switch:], 30, 34)
    assert start is not None and start <= 1200, start  # measured: ~750 samples
    assert trace.over_limit_events == 0


def test_timeouts_cut_the_limit_then_it_recovers() -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    burst = range(2000, 2005)
    trace = simulate(
        lim,
        5000,
        lambda i: 16,
        outcome=lambda i: Outcome.TIMEOUT if i in burst else Outcome.SUCCESS,
    )
    before = trace.limits[burst.start - 1]
    assert 14 <= before <= 18
    after_burst = trace.limits[burst.stop - 1]
    assert after_burst <= int(before * 0.9**5) + 1  # five multiplicative cuts
    assert lim.snapshot()["decreases"] == 5
    assert trace.admitted_over_limit == 0  # in flight may exceed the cut limit; no admission then
    back = settles(trace.limits[burst.stop :], 14, 18)
    assert back is not None and back <= 800, back  # measured: ~400 samples


def test_limit_never_leaves_the_bounds_in_the_loop() -> None:
    # Capacity above the ceiling: pinned at the ceiling.  Capacity 1 below the floor
    # of 2: the floor's latency becomes the baseline and the limit dithers 2..3.
    for knee, end_lo, end_hi in ((16, 10, 10), (1, 2, 3)):
        lim = AdaptiveLimiter(LimiterConfig(initial_limit=4, min_limit=2, max_limit=10))
        trace = simulate(lim, 2000, constant(knee))
        assert min(trace.limits) >= 2 and max(trace.limits) <= 10
        assert trace.admitted_over_limit == 0
        assert end_lo <= min(trace.limits[1000:]) and max(trace.limits[1000:]) <= end_hi


def test_app_limited_client_does_not_inflate_the_limit() -> None:
    lim = AdaptiveLimiter(LimiterConfig())
    trace = simulate(lim, 3000, lambda i: 16, demand=2)
    assert max(trace.limits) <= 4  # stays at the initial limit, never grows toward 16
    assert lim.estimated_limit < 5.0


def test_latency_regime_change_rebaselines() -> None:
    # Every task becomes 3x slower whatever the concurrency: no limit can fix that.
    lim = AdaptiveLimiter(LimiterConfig())
    switch = 2500
    trace = simulate(lim, 5000, lambda i: 16, base=lambda i: BASE_S if i < switch else 3 * BASE_S)
    start = settles(trace.limits[switch:], 14, 18)
    assert start is not None and start <= 700, start  # measured: ~340 samples
    assert lim.snapshot()["rebaselines"] >= 1
    assert lim.snapshot()["long_rtt"] == pytest.approx(3 * BASE_S, rel=0.05)


def test_initial_limit_above_capacity_is_corrected_by_baseline_checks() -> None:
    # The warm-up samples the downstream at 4x its capacity; the long RTT starts 4x
    # too high and only the baseline check can tell.
    lim = AdaptiveLimiter(LimiterConfig(initial_limit=16))
    trace = simulate(lim, 3000, lambda i: 4)
    start = settles(trace.limits, 2, 6)
    assert start is not None and start <= 900, start  # measured: 220-420 samples
    assert lim.snapshot()["baseline_checks"] >= 1


def test_sub_millisecond_latency_jitter_is_not_congestion() -> None:
    """Trivial tasks (µs) whose latency doubles with concurrency must not collapse the limit."""
    lim = AdaptiveLimiter(LimiterConfig(initial_limit=8, max_limit=256))
    for i in range(3000):
        inflight = lim.limit
        lim.on_sample(2e-6 * (1 + inflight / 4) * (1 + (i % 7) / 10), inflight)
    assert lim.limit >= 64
    with pytest.raises(ValueError, match="min_rtt_s"):
        LimiterConfig(min_rtt_s=-1.0)


MIXES = {
    "1ms-or-50ms": ((0.001, 0.8), (0.050, 0.2)),  # the soak's no-ops and 50 ms sleeps
    "10ms-or-100ms": ((0.010, 0.5), (0.100, 0.5)),
    "1-to-100ms": ((0.001, 0.25), (0.010, 0.25), (0.030, 0.25), (0.100, 0.25)),
}


def mixed(mix: tuple[tuple[float, float], ...], seed: int) -> Callable[[int], float]:
    """A base latency drawn from ``mix`` ((seconds, share), ...) for every task admitted."""
    rng = random.Random(seed)
    durations, shares = zip(*mix, strict=True)
    return lambda i: rng.choices(durations, shares)[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mix", MIXES.values(), ids=MIXES.keys())
def test_tasks_of_different_durations_are_not_congestion(
    mix: tuple[tuple[float, float], ...], seed: int
) -> None:
    """One class, tasks of very different durations, nothing queues however many run: the
    limit must not read the mix as congestion (it fell to 1-2 here before point 8 of the
    module docstring; ``bench/limiter_mixed.py`` compares it with fixed limits)."""
    lim = AdaptiveLimiter(LimiterConfig(max_limit=256))
    trace = simulate(lim, 8000, constant(10**6), base=mixed(mix, seed), seed=seed)
    assert statistics.median(trace.limits[4000:]) >= 64
    assert trace.admitted_over_limit == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mix", MIXES.values(), ids=MIXES.keys())
def test_tasks_of_different_durations_still_find_a_knee(
    mix: tuple[tuple[float, float], ...], seed: int
) -> None:
    """The same mixes before a downstream that queues beyond 16: the limit stays near the
    knee (measured medians 13-45), neither collapsing to the floor nor running to 256."""
    lim = AdaptiveLimiter(LimiterConfig(max_limit=256))
    trace = simulate(lim, 8000, constant(16), base=mixed(mix, seed), seed=seed)
    assert 8 <= statistics.median(trace.limits[4000:]) <= 64

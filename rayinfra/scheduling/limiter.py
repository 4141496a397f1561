"""Adaptive concurrency limit for one task class of the scheduler.

Public design followed
----------------------
Netflix ``concurrency-limits``: the delay-gradient algorithm of ``Gradient2Limit``
on the normal path, and the multiplicative decrease of ``AIMDLimit`` for hard
failures.  Gradient2 in one paragraph: keep a long-term RTT (an exponential
average over ``long_window`` samples, seeded by the mean of the first 10) and a
short-term RTT; the gradient ``max(0.5, min(1.0, rtt_tolerance * long_rtt /
short_rtt))`` is 1 while latency is flat and drops below 1 as tasks start to
queue; the new estimate ``estimated * gradient + queue_size(estimated)`` is blended
into the old one with ``smoothing`` and clamped to ``[min_limit, max_limit]``.  The
limit does not move while the caller is app-limited (``inflight < estimated / 2``),
and the long RTT is multiplied by 0.95 while it is more than twice the short RTT,
so the limiter recovers once a period of heavy load is over.  AIMD: a timeout or
a resource failure multiplies the estimate by ``backoff_ratio``.

Where this module departs from Gradient2, and why
-------------------------------------------------
The scheduler runs a *closed loop*: it keeps ``limit`` tasks in flight, so each
*round* (one task duration) delivers about ``limit`` samples that all describe
the same concurrency.  Taken literally, Gradient2 fails on such a loop: in the
closed-loop simulation of the tests, its tolerance 1.5 with a headroom of 4 or of
``sqrt(limit)`` pins the limit at ``max_limit`` (or swings it between the knee and
``max_limit``) whatever the capacity, and even with this module's defaults it
swings over about +-30% of the capacity.  Hence:

1. *Gain per round.*  A sample moves the estimate by ``smoothing / estimated`` of
   the Gradient2 step, so ``smoothing`` is the weight of one round.  Per-sample
   smoothing multiplies the loop gain by the limit and makes the loop oscillate.
2. *Short RTT* is an exponential average over about one round (factor
   ``2 / (estimated + 1)``), which takes per-task jitter out of the gradient.
3. *Long RTT = latency of uncongested rounds.*  An average of all samples follows
   the queueing the limiter itself causes, so the limit ratchets upward.  Here the
   long RTT follows the short RTT down with the per-round weight ``smoothing``, and
   up (factor ``2 / (long_window + 1)``) only from rounds at most a quarter of a
   queued task above it (plus part of the noise allowance, capped at half a task).
4. *Noise allowance.*  The tolerated latency is ``rtt_tolerance * long_rtt * (1 +
   2 * d / sqrt(estimated))``, ``d`` being the mean absolute relative deviation of
   single samples: jitter that survives the one-round average is not congestion.
5. *Baseline check* (after Vegas' periodic no-load RTT probe and BBR's ProbeRTT).
   A long RTT learned above the knee (``initial_limit`` above the capacity, or
   latency falling faster than it is followed) is self-consistent: the loop never
   sees a lower concurrency again.  So every ``long_window`` samples the limiter
   holds the limit for two rounds, then holds it one task lower for two rounds,
   and compares the second round of each.  If one task fewer lowered the latency
   (by more than half a task's worth and the noise), the loop sat above the knee:
   the long RTT takes the lower round's latency, the estimate steps down a task,
   and the check repeats four rounds later until latency stops responding.
6. *Latency regime change.*  If every task got slower, no limit helps: during one
   continuous congestion episode the estimate falls to half its peak (or to
   ``min_limit``) while the short RTT stays above 90% of its peak.  The long RTT is
   then reset to the short RTT and the limiter starts over in slow start.
7. *Slow start.*  At start, after such a reset, and whenever the estimate has
   grown by two tasks since the last congestion (the downstream gained capacity),
   each sample applies the plain per-sample Gradient2 increase ``estimated +
   smoothing * queue_size`` (about ``smoothing * queue_size`` per round per task in
   flight: exponential) until congestion has lasted one round.

8. *Tasks of different durations in one class* (a class running no-ops beside 50 ms
   sleeps).  Single latencies then vary by far more than queueing moves them, and a
   one-round average at a small limit reads the mix as congestion: in a loop with no
   knee at all the limit fell to 1-2 (``bench/limiter_mixed.py``).  So the short RTT
   averages over at least enough samples for its noise allowance to stay within 30%
   (``(2 d / 0.3)^2``, at most ``long_window``), the long RTT follows it down with
   ``smoothing`` per window (not per round), and where a round's allowance is wider
   than four queued tasks the long RTT may rise within the window's whole allowance
   (not half a task), so it is not held at the low tail of the mix.  The gain per
   round is unchanged (a slower one let a short congestion episode hold the limit
   down for thousands of samples).  With steady latencies (the deviation small) all
   three reduce to the rules above.

A round is *congested* when the short RTT exceeds the tolerated latency by more
than half a queued task (``* (1 + 0.5 / estimated)``).

Defaults
--------
With a downstream whose latency is flat up to ``N`` concurrent tasks and grows as
``base * inflight / N`` beyond, the equilibrium is ``rtt_tolerance * N +
queue_size``.  ``rtt_tolerance = 1.0``: every 0.01 above 1 parks the limit 1% of
the capacity past the knee, and jitter is handled by points 2 and 4 instead.
``queue_size = 0.5`` (constant): the limit dithers between ``N`` and ``N + 1`` (and
``N - 1`` during a baseline check); one task or more would keep the loop above the
knee, where it never sees an uncongested round again.  ``smoothing = 0.2`` and
``long_window = 600`` are Gradient2's; ``backoff_ratio = 0.9`` is AIMD's.

Outcomes
--------
``SUCCESS`` is a latency sample.  ``FAILURE`` and ``INVALID`` (the task's own error)
are counted and otherwise ignored: a task that raised early says nothing about
service time, and fast failures would drag the long RTT down and make healthy tasks
look congested.  ``TIMEOUT`` and ``RESOURCE`` (out of memory, worker died) set the
estimate to ``max(min_limit, estimated * backoff_ratio)``, independent of the
gradient; their latency is not a sample either (a timeout lasts the timeout).

Pure logic: no clock, no threads, no Ray.  Callers pass latencies in seconds and
serialise calls (the object is not thread-safe).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AdaptiveLimiter", "LimiterConfig", "Outcome", "default_queue_size"]

# Samples averaged (plain mean) to seed the long RTT, as Gradient2's warm-up.
_WARMUP_SAMPLES = 10
# Latencies below this (seconds) count as this, to keep ratios finite.
_MIN_RTT_S = 1e-9
# The limit is floor(estimate + this): 4 + 10 * 0.1 must give 5, not 4.
_ROUNDING_SLACK = 1e-9
# Gradient2's recovery after prolonged load: long > 2 * short => long *= 0.95.
_DECAY_RATIO = 2.0
_DECAY_FACTOR = 0.95
# Noise allowance: this many mean absolute deviations of a one-round average.
_NOISE_DEVIATIONS = 2.0
# A round is congested beyond the latency of this many queued tasks.
_CONGESTION_TASKS = 0.5
# The long RTT rises only from rounds at most this many queued tasks above it,
# plus this share of the noise allowance, capped at that many queued tasks.
_BASELINE_GATE_TASKS = 0.25
_BASELINE_GATE_NOISE = 0.5
_BASELINE_GATE_NOISE_CAP_TASKS = 0.5
# The short RTT averages over enough samples for its noise allowance to stay within this
# (relative): with tasks of very different durations in one class, more than a round.
_WINDOW_NOISE = 0.3
# Where a round's noise allowance is wider than this many queued tasks, the long RTT rises
# with the whole allowance of the averaging window (point 8 of the module docstring).
_RESOLVED_TASKS = 4.0
# Congestion lasting this many rounds ends slow start.
_CONFIRM_ROUNDS = 1.0
# Slow start again once the estimate grew by this many tasks without congestion.
_REPROBE_TASKS = 2.0
# Regime change: within one congestion episode of at least _REGIME_MIN_ROUNDS the
# estimate fell to _REGIME_CUT of its peak (or to min_limit) while the short RTT
# stayed above _REGIME_KEEP of its peak.
_REGIME_CUT = 0.5
_REGIME_KEEP = 0.9
_REGIME_MIN_ROUNDS = 2.0
# Baseline check again this many rounds after one that lowered the baseline (and
# after the first samples); otherwise every long_window samples.
_RECHECK_ROUNDS = 4.0


def _whole(estimate: float) -> int:
    """Integer limit of an estimate."""
    return int(estimate + _ROUNDING_SLACK)


def default_queue_size(limit: int) -> float:
    """Default headroom: half a task at every limit.

    It must stay below one task for the limit to dither between the knee and one
    task above it (see the module docstring).
    """
    del limit
    return 0.5


class Outcome(enum.Enum):
    """How a task attempt ended: the one vocabulary of the executors (which report it), the
    scheduler's retry policy (:mod:`rayinfra.scheduling.state`), this limiter and the error
    metrics (whose ``reason`` label is the value)."""

    SUCCESS = "success"
    """Completed: its latency is a sample."""
    FAILURE = "failure"
    """The task's own error: counted, otherwise ignored; retried by the class's policy."""
    INVALID = "invalid"
    """No handler takes the payload (or its class left the config): like FAILURE, not retried."""
    TIMEOUT = "timeout"
    """Exceeded its deadline: multiplicative decrease; retried by the class's policy."""
    RESOURCE = "resource"
    """Its worker died (out of memory, killed): multiplicative decrease; runs again."""
    CANCELLED = "cancelled"
    """Cancelled on request: not a sample, never retried."""
    UNSCHEDULABLE = "unschedulable"
    """No node can ever run its class: it never ran, never retried."""
    EXECUTOR = "executor"
    """Its class's executors cannot start: it never ran, never retried."""


@dataclass(frozen=True)
class LimiterConfig:
    """Configuration of one :class:`AdaptiveLimiter`.

    Attributes:
        initial_limit: starting limit.
        min_limit: floor of the limit (>= 1).
        max_limit: ceiling of the limit.
        smoothing: weight of one round (about ``estimated_limit`` samples) of the
            Gradient2 update; the per-sample weight of the increase in slow start.
        rtt_tolerance: latency ratio short/long accepted before the gradient
            drops below 1 (>= 1); the limit settles near ``rtt_tolerance`` times
            the capacity.
        long_window: samples of the long-term RTT average (factor
            ``2 / (long_window + 1)``); also the period of the baseline check.
        queue_size: headroom in tasks allowed above the gradient estimate, as a
            function of the integer estimate; ``None`` selects
            :func:`default_queue_size`.  Keep it below one task.
        backoff_ratio: multiplicative decrease on ``TIMEOUT`` / ``RESOURCE``.
        slow_start: grow exponentially at start, after a latency regime change and
            after two tasks of growth without congestion.
        baseline_check: periodically hold the limit one task lower to verify that
            the long RTT was not learned above the knee.
    """

    initial_limit: int = 4
    min_limit: int = 1
    max_limit: int = 64
    smoothing: float = 0.2
    rtt_tolerance: float = 1.0
    long_window: int = 600
    queue_size: Callable[[int], float] | None = None
    backoff_ratio: float = 0.9
    slow_start: bool = True
    baseline_check: bool = True
    min_rtt_s: float = 0.001
    """Latencies below this are treated as this: sub-millisecond differences between trivial
    tasks are event-loop scheduling noise, not service time, and would read as congestion."""

    def __post_init__(self) -> None:
        """Validate; raise ``ValueError`` naming the offending field."""
        for name in ("initial_limit", "min_limit", "max_limit", "long_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"LimiterConfig.{name} must be an int, got {value!r}")
        if self.min_limit < 1:
            raise ValueError(f"LimiterConfig.min_limit must be >= 1, got {self.min_limit}")
        if self.max_limit < self.min_limit:
            raise ValueError(
                f"LimiterConfig.max_limit must be >= min_limit ({self.min_limit}), "
                f"got {self.max_limit}"
            )
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError(
                "LimiterConfig.initial_limit must be within [min_limit, max_limit] = "
                f"[{self.min_limit}, {self.max_limit}], got {self.initial_limit}"
            )
        if self.long_window < 1:
            raise ValueError(f"LimiterConfig.long_window must be >= 1, got {self.long_window}")
        if not (math.isfinite(self.min_rtt_s) and self.min_rtt_s >= 0.0):
            raise ValueError(
                f"LimiterConfig.min_rtt_s must be a finite number >= 0, got {self.min_rtt_s}"
            )
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"LimiterConfig.smoothing must be in (0, 1], got {self.smoothing}")
        if not (math.isfinite(self.rtt_tolerance) and self.rtt_tolerance >= 1.0):
            raise ValueError(
                f"LimiterConfig.rtt_tolerance must be a finite number >= 1, "
                f"got {self.rtt_tolerance}"
            )
        if not 0.0 < self.backoff_ratio < 1.0:
            raise ValueError(
                f"LimiterConfig.backoff_ratio must be in (0, 1), got {self.backoff_ratio}"
            )
        if self.queue_size is not None and not callable(self.queue_size):
            raise ValueError(
                f"LimiterConfig.queue_size must be callable or None, got {self.queue_size!r}"
            )


class AdaptiveLimiter:
    """Adaptive concurrency limit of one task class (Gradient2 + AIMD).

    The scheduler calls :meth:`on_sample` whenever a task of the class finishes and
    admits new tasks only while :meth:`available` is positive.  ``inflight`` is the
    number of the class's tasks in flight when the sample is reported (the
    finishing one included or not: the limiter only compares it with
    ``estimated_limit / 2``).  The limit can drop below the number in flight (a
    timeout, a bound change); the scheduler then admits nothing until enough tasks
    have finished.  Gradient steps (with a headroom below one task) and baseline
    checks move the limit by at most one task per sample, so they never cause that.
    """

    def __init__(self, config: LimiterConfig) -> None:
        """Start at ``config.initial_limit``, in slow start if ``config.slow_start``."""
        self._config = config
        self._queue_size: Callable[[int], float] = config.queue_size or default_queue_size
        self._min_requested = config.min_limit
        self._max = config.max_limit
        self._estimate = float(config.initial_limit)
        self._long_factor = 2.0 / (config.long_window + 1)
        # Latency state, seconds; 0.0 until the first latency sample.
        self._short_rtt = 0.0
        self._long_rtt = 0.0
        self._deviation = 0.0  # mean absolute relative deviation of one sample
        self._latency_samples = 0
        # Counters for snapshot().
        self._samples = 0
        self._decreases = 0
        self._failures = 0
        self._rebaselines = 0
        self._checks = 0
        # Slow start; the anchor is the estimate at the last confirmed congestion.
        self._slow_start = config.slow_start
        self._anchor = self._estimate
        # Current congestion episode (consecutive congested samples).
        self._episode_samples = 0
        self._episode_peak_estimate = 0.0
        self._episode_peak_rtt = 0.0
        # Baseline check: the limit is capped at _check_cap while it runs.
        self._check_cap: int | None = None
        self._check_skip = 0
        self._check_left = 0
        self._check_sum = 0.0
        self._check_held = 0.0  # mean latency of the held round; 0.0 before it
        self._since_check = 0
        # The first check comes early: the warm-up may have seeded the long RTT
        # above the knee (initial_limit above the capacity).
        self._check_interval = _RECHECK_ROUNDS * config.initial_limit

    # ------------------------------------------------------------------ reading

    @property
    def config(self) -> LimiterConfig:
        """The configuration this limiter was built with (bounds: see set_bounds)."""
        return self._config

    @property
    def min_limit(self) -> int:
        """Current floor: the requested minimum, capped by the current maximum."""
        return min(self._min_requested, self._max)

    @property
    def max_limit(self) -> int:
        """Current ceiling."""
        return self._max

    @property
    def limit(self) -> int:
        """Current integer limit, always within ``[min_limit, max_limit]``."""
        limit = _whole(self._estimate)
        if self._check_cap is not None:
            limit = min(limit, self._check_cap)
        return max(self.min_limit, min(self._max, limit))

    @property
    def estimated_limit(self) -> float:
        """Unrounded estimate behind :attr:`limit` (a baseline check may hold the
        limit one task below it)."""
        return self._estimate

    def available(self, inflight: int) -> int:
        """How many more tasks may be admitted now: ``max(0, limit - inflight)``."""
        if inflight < 0:
            raise ValueError(f"inflight must be >= 0, got {inflight}")
        return max(0, self.limit - inflight)

    def snapshot(self) -> dict[str, float]:
        """State for metrics and logs (RTTs in seconds, 0.0 before any sample).

        ``rtt_deviation`` is the mean absolute relative deviation of one sample
        (the noise allowance uses it), ``decreases`` counts multiplicative
        decreases (``TIMEOUT``/``RESOURCE``), ``rebaselines`` latency regime
        changes, ``baseline_checks`` completed baseline checks.
        """
        return {
            "limit": float(self.limit),
            "estimated_limit": self._estimate,
            "long_rtt": self._long_rtt,
            "short_rtt": self._short_rtt,
            "rtt_deviation": self._deviation,
            "samples": float(self._samples),
            "decreases": float(self._decreases),
            "failures": float(self._failures),
            "rebaselines": float(self._rebaselines),
            "baseline_checks": float(self._checks),
            "slow_start": 1.0 if self._slow_start else 0.0,
            "min_limit": float(self.min_limit),
            "max_limit": float(self._max),
        }

    # ------------------------------------------------------------------ writing

    def set_bounds(self, min_limit: int | None = None, max_limit: int | None = None) -> None:
        """Change the bounds (e.g. Ray reports fewer free CPUs); clamp the estimate.

        A ``max_limit`` below the requested minimum wins: the floor becomes
        ``min(min_limit, max_limit)`` until the ceiling rises again.  Passing both
        with ``min_limit > max_limit`` is an error.
        """
        for name, value in (("min_limit", min_limit), ("max_limit", max_limit)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if min_limit is not None and max_limit is not None and min_limit > max_limit:
            raise ValueError(f"min_limit ({min_limit}) must be <= max_limit ({max_limit})")
        if min_limit is not None:
            self._min_requested = min_limit
        if max_limit is not None:
            self._max = max_limit
        self._estimate = self._clamp(self._estimate)
        self._anchor = min(self._anchor, self._estimate)

    def on_sample(self, latency_s: float, inflight: int, outcome: Outcome = Outcome.SUCCESS) -> int:
        """Record one finished task and return the new limit.

        Args:
            latency_s: the task's latency in seconds (finite, >= 0).
            inflight: tasks of the class in flight when it finished (>= 0).
            outcome: see :class:`Outcome`.
        """
        self.record(latency_s, inflight, outcome)
        return self.limit

    def record(self, latency_s: float, inflight: int, outcome: Outcome = Outcome.SUCCESS) -> None:
        """:meth:`on_sample` without working out the new limit (a caller recording a batch of
        samples reads :attr:`limit` once, when it next dispatches)."""
        if not (math.isfinite(latency_s) and latency_s >= 0.0):
            raise ValueError(f"latency_s must be a finite number >= 0, got {latency_s!r}")
        if inflight < 0:
            raise ValueError(f"inflight must be >= 0, got {inflight}")
        self._samples += 1
        if outcome in (Outcome.TIMEOUT, Outcome.RESOURCE):
            self._back_off()
            return
        if outcome is not Outcome.SUCCESS:  # no service time to learn from
            self._failures += 1
            return

        rtt = max(latency_s, self._config.min_rtt_s, _MIN_RTT_S)
        estimate = self._estimate
        rounds = max(1.0, estimate)
        window = self._window(rounds)  # as the samples before this one say
        self._observe(rtt, rounds, window)
        if self._check_cap is not None:
            self._check_step(rtt)
            return
        if inflight < self._estimate / 2:
            return  # app-limited: the limit is not being exercised

        tolerated = self._config.rtt_tolerance * self._long_rtt * (1.0 + self._noise(window))
        if self._short_rtt > tolerated * (1.0 + _CONGESTION_TASKS / rounds):
            if self._regime_changed():
                return
            if self._episode_samples >= _CONFIRM_ROUNDS * rounds:
                self._slow_start = False
                self._anchor = estimate
        else:
            self._episode_samples = 0
            if (
                self._config.slow_start
                and not self._slow_start
                and estimate >= self._anchor + _REPROBE_TASKS
            ):
                self._slow_start = True
            if (
                self._config.baseline_check
                and not self._slow_start
                and self._since_check >= self._check_interval
                and self._start_check()
            ):
                return
        if not self._slow_start:
            self._since_check += 1

        smoothing = self._config.smoothing
        queue = float(self._queue_size(_whole(estimate)))
        if self._slow_start:
            new = estimate + smoothing * queue
        else:
            gradient = max(0.5, min(1.0, tolerated / self._short_rtt))
            weight = smoothing / rounds
            new = estimate * (1.0 - weight) + (estimate * gradient + queue) * weight
        self._estimate = self._clamp(new)

    # ------------------------------------------------------------------ internals

    def _clamp(self, value: float) -> float:
        return max(float(self.min_limit), min(float(self._max), value))

    def _window(self, rounds: float) -> float:
        """Samples the short RTT averages over: a round, or more where single samples vary so
        much (a class whose tasks take different times) that a round's average would read
        their mix as congestion: enough for its noise allowance to stay within
        :data:`_WINDOW_NOISE` (at most ``long_window``)."""
        need = (_NOISE_DEVIATIONS * self._deviation / _WINDOW_NOISE) ** 2
        return max(rounds, min(need, float(self._config.long_window)))

    def _noise(self, samples: float) -> float:
        """Relative noise allowance of an average over ``samples`` latencies."""
        return _NOISE_DEVIATIONS * self._deviation / math.sqrt(max(1.0, samples))

    def _back_off(self) -> None:
        """AIMD multiplicative decrease (TIMEOUT / RESOURCE); aborts a check."""
        self._estimate = self._clamp(self._estimate * self._config.backoff_ratio)
        self._decreases += 1
        self._slow_start = False
        self._anchor = self._estimate
        self._episode_samples = 0
        self._check_cap = None
        self._since_check = 0

    def _observe(self, rtt: float, rounds: float, window: float) -> None:
        """Update the short RTT, the sample deviation and the long (baseline) RTT."""
        self._latency_samples += 1
        if self._short_rtt == 0.0:
            self._short_rtt = rtt
        else:
            deviation = abs(rtt - self._short_rtt) / self._short_rtt
            weight = max(self._long_factor, 1.0 / (self._latency_samples - 1))
            self._deviation += (deviation - self._deviation) * weight
            self._short_rtt += (rtt - self._short_rtt) * 2.0 / (window + 1.0)

        if self._latency_samples <= _WARMUP_SAMPLES:
            self._long_rtt += (rtt - self._long_rtt) / self._latency_samples
            return
        short, long = self._short_rtt, self._long_rtt
        if self._noise(rounds) <= _RESOLVED_TASKS / rounds:
            noise = min(
                _BASELINE_GATE_NOISE * self._noise(window), _BASELINE_GATE_NOISE_CAP_TASKS / rounds
            )
        else:  # a round cannot resolve a few queued tasks: no bias below the mean latency
            noise = self._noise(window)
        gate = _BASELINE_GATE_TASKS / rounds + noise
        if short < long:
            long += (short - long) * max(self._long_factor, self._config.smoothing / window)
        elif short <= long * (1.0 + gate):
            long += (short - long) * self._long_factor
        if long > _DECAY_RATIO * short:
            long *= _DECAY_FACTOR
        self._long_rtt = long

    def _regime_changed(self) -> bool:
        """Track the congestion episode; re-baseline if cutting the limit did not help."""
        estimate, short = self._estimate, self._short_rtt
        if self._episode_samples == 0:
            self._episode_peak_estimate = estimate
            self._episode_peak_rtt = short
        else:
            self._episode_peak_estimate = max(self._episode_peak_estimate, estimate)
            self._episode_peak_rtt = max(self._episode_peak_rtt, short)
        self._episode_samples += 1
        cut = estimate <= max(float(self.min_limit), self._episode_peak_estimate * _REGIME_CUT)
        if not (
            cut
            and self._episode_samples >= _REGIME_MIN_ROUNDS * max(1.0, estimate)
            and short >= _REGIME_KEEP * self._episode_peak_rtt
        ):
            return False
        self._long_rtt = short
        self._rebaselines += 1
        self._episode_samples = 0
        self._slow_start = self._config.slow_start
        self._anchor = estimate
        return True

    def _start_check(self) -> bool:
        """Begin a baseline check: two rounds held at the limit, two one task lower."""
        self._since_check = 0
        level = _whole(self._estimate)
        if level - 1 < self.min_limit:
            return False
        self._check_held = 0.0
        self._check_phase(level)
        return True

    def _check_phase(self, cap: int) -> None:
        self._check_cap = cap
        self._check_skip = cap + 1  # tasks admitted before this phase, still finishing
        self._check_left = cap
        self._check_sum = 0.0

    def _check_step(self, rtt: float) -> None:
        """Average the second round of each phase, then compare the two."""
        if self._check_skip > 0:
            self._check_skip -= 1
            return
        self._check_sum += rtt
        self._check_left -= 1
        if self._check_left > 0:
            return
        cap = self._check_cap
        assert cap is not None
        measured = self._check_sum / cap
        if self._check_held == 0.0:
            self._check_held = measured
            self._check_phase(cap - 1)
            return
        self._check_cap = None
        self._checks += 1
        level = cap + 1
        noise = _NOISE_DEVIATIONS * self._deviation * math.sqrt(1.0 / level + 1.0 / cap)
        if measured < self._check_held * (1.0 - max(noise, _CONGESTION_TASKS / level)):
            # One task fewer lowered the latency: the loop sat above the knee.
            self._long_rtt = min(self._long_rtt, measured)
            self._estimate = self._clamp(float(cap))
            self._check_interval = _RECHECK_ROUNDS * level
        else:
            self._check_interval = float(self._config.long_window)

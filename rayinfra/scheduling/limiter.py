"""Adaptive concurrency limit for one task class of the scheduler.

Public design followed
----------------------
Netflix ``concurrency-limits``: the delay-gradient algorithm of ``Gradient2Limit``
for the normal path, plus the multiplicative decrease of ``AIMDLimit`` for hard
failures.  Gradient2 in one paragraph: keep a long-term RTT (an exponential
average over ``long_window`` samples) and a short-term RTT; the gradient
``max(0.5, min(1.0, rtt_tolerance * long_rtt / short_rtt))`` is 1 while latency is
flat and falls below 1 as requests start to queue; the new estimate is
``estimated * gradient + queue_size(estimated)``, blended into the old one with
``smoothing`` and clamped to ``[min_limit, max_limit]``.  The limit does not grow
while the caller is app-limited (``inflight < estimated / 2``), and the long RTT is
pulled down (times 0.95) while it is more than twice the short RTT, so the limiter
recovers once a period of heavy load is over.  AIMD: a timeout or a
resource-exhaustion outcome multiplies the estimate by ``backoff_ratio``.

Where this module departs from Gradient2, and why
-------------------------------------------------
The scheduler runs a *closed loop*: it keeps ``limit`` tasks in flight, so every
"round" (one task duration) delivers about ``limit`` samples that all describe the
same concurrency.  Taken literally, Gradient2 fails on that loop (a simulation with
Gradient2's own defaults, ``rtt_tolerance=1.5`` and ``sqrt`` headroom, pins the limit
at ``max_limit`` whatever the downstream capacity), for three reasons that the
changes below address:

1. *Gain per round.*  Each sample moves the estimate by ``smoothing / estimated``
   of the Gradient2 step, so ``smoothing`` is the weight of one round.  Per-sample
   smoothing multiplies the loop gain by ``limit`` and makes the limit oscillate.
2. *Short RTT* is an exponential average over about one round of samples (factor
   ``2 / (estimated + 1)``), which removes per-task jitter from the gradient.
3. *Long RTT creep.*  An average of all samples follows the latency the limiter
   itself causes, so the estimate ratchets upward (the long RTT rises, the
   gradient returns to 1, the limit grows, latency rises...).  Here the long RTT is
   the latency of *uncongested* rounds: it moves toward the short RTT with factor
   ``2 / (long_window + 1)`` only when the short RTT is below it or less than a
   quarter of one queued task above it (``long * (1 + 0.25 / estimated)``).

Regime changes.  Down: the long RTT follows lower latency at once, with
Gradient2's decay when it is more than twice the short RTT.  Up (every task got
slower, which no limit can fix): if the estimate has been halved, or sits at
``min_limit``, during one continuous congestion episode and the short RTT has not
dropped below 90% of its peak in that episode, the latency does not depend on our
concurrency; the long RTT is reset to the short RTT and the limiter probes again.

Probing (a TCP-style slow start).  At start, after such a reset, and whenever the
estimate has grown by two tasks without any congestion signal (the downstream
gained capacity), uncongested samples apply the plain per-sample Gradient2 step
(``estimated + smoothing * queue_size``: about ``smoothing * queue_size`` of growth
per round *per task in flight*, i.e. exponential) until the first congested
sample.  A sample is *congested* when the short RTT exceeds
``rtt_tolerance * long_rtt * (1 + 0.5 / estimated)``: the latency half a queued task
would add.

Outcomes.  ``SUCCESS`` is a latency sample.  ``FAILURE`` (the task's own error) is
counted but is neither a latency sample nor a congestion signal: a task that
raised early says nothing about service time, and fast failures would drag the
long RTT down and make every healthy task look congested.  ``TIMEOUT`` and
``RESOURCE`` (out of memory, worker died, unschedulable) cut the estimate to
``max(min_limit, estimated * backoff_ratio)``, independent of the gradient, and are
not latency samples either (a timeout's duration is the timeout).

The equilibrium with a downstream whose latency is flat up to ``N`` concurrent
tasks and grows as ``base * inflight / N`` beyond it is ``rtt_tolerance * N +
queue_size``; the defaults (``1.0`` and ``0.5``) therefore make the limit dither
between ``N`` and ``N + 1``.  Headroom of one task or more would keep the loop
permanently above the knee, where no uncongested round is ever seen again.

Pure logic: no clock, no threads, no Ray.  The caller passes latencies in seconds
and serialises calls (the object is not thread-safe).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AdaptiveLimiter", "LimiterConfig", "Outcome", "default_queue_size"]

# Samples averaged (plain mean) to seed the long RTT, as Gradient2's warm-up.
_WARMUP_SAMPLES = 10
# Latencies below this (seconds) are treated as this, to keep ratios finite.
_MIN_RTT_S = 1e-9
# Gradient2's recovery after prolonged load: long > 2 * short => long *= 0.95.
_DECAY_RATIO = 2.0
_DECAY_FACTOR = 0.95
# The long RTT may absorb rounds at most this many queued tasks above it.
_BASELINE_GATE_TASKS = 0.25
# A round is congested beyond the latency of this many queued tasks.
_CONGESTION_TASKS = 0.5
# Re-probe once the estimate grew by this many tasks without congestion.
_PROBE_AFTER_TASKS = 2.0
# Latency-regime detection: the estimate fell to this fraction of the episode
# peak (or to min_limit) and the short RTT is still above this fraction of its peak.
_REGIME_CUT = 0.5
_REGIME_KEEP = 0.9
# ...and the congestion episode lasted at least this many rounds.
_REGIME_MIN_ROUNDS = 2.0
# Noise allowance: this many mean absolute deviations of the short RTT.
_NOISE_DEVIATIONS = 2.0
GATE_NOISE = 0.0


def default_queue_size(limit: int) -> float:
    """Default headroom: half a task at every limit.

    Must stay below one task for the equilibrium to dither between the knee and
    one task above it (see the module docstring).
    """
    del limit
    return 0.5


class Outcome(enum.Enum):
    """How a task of the class ended, as far as the limiter is concerned."""

    SUCCESS = "success"
    """Completed; its latency is a sample."""
    FAILURE = "failure"
    """The task's own error: counted, ignored by the limit."""
    TIMEOUT = "timeout"
    """Exceeded its deadline: multiplicative decrease."""
    RESOURCE = "resource"
    """Out of memory, worker died or unschedulable: multiplicative decrease."""


@dataclass(frozen=True)
class LimiterConfig:
    """Configuration of one :class:`AdaptiveLimiter`.

    Attributes:
        initial_limit: starting limit; keep it at or below the expected capacity,
            since the first samples seed the long (baseline) RTT.
        min_limit: floor of the limit (>= 1).
        max_limit: ceiling of the limit.
        smoothing: weight of one round (about ``estimated_limit`` samples) of the
            Gradient2 estimate; also the per-sample weight while probing.
        rtt_tolerance: accepted latency ratio short/long before the gradient drops
            below 1 (>= 1).  The default 1.0 puts the equilibrium at the knee; every
            0.01 above 1 moves it 1% of the capacity higher.  Raise it only for task
            classes whose latency is noisy even when averaged over a round.
        long_window: samples of the long-term RTT exponential average
            (factor ``2 / (long_window + 1)``).
        queue_size: headroom (tasks) allowed above the gradient estimate, as a
            function of the current integer estimate; ``None`` selects
            :func:`default_queue_size`.  Keep it below 1.
        backoff_ratio: multiplicative decrease on ``TIMEOUT`` / ``RESOURCE``.
        slow_start: probe (grow exponentially) until the first congestion signal.
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
                f"LimiterConfig.initial_limit must be within [min_limit, max_limit] = "
                f"[{self.min_limit}, {self.max_limit}], got {self.initial_limit}"
            )
        if self.long_window < 1:
            raise ValueError(f"LimiterConfig.long_window must be >= 1, got {self.long_window}")
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
    admits a new task only while :meth:`available` is positive.  ``inflight`` is the
    number of the class's tasks in flight when the sample is reported (counting the
    finishing one or not: the limiter only compares it with ``estimated_limit / 2``).
    """

    def __init__(self, config: LimiterConfig) -> None:
        """Start at ``config.initial_limit``, probing if ``config.slow_start``."""
        self._config = config
        self._queue_size: Callable[[int], float] = config.queue_size or default_queue_size
        self._min_requested = config.min_limit
        self._max = config.max_limit
        self._estimate = float(config.initial_limit)
        self._long_factor = 2.0 / (config.long_window + 1)
        self._short_rtt = 0.0  # 0.0 until the first latency sample
        self._long_rtt = 0.0
        self._deviation = 0.0  # mean absolute relative deviation of one sample
        self._warmup = 0
        self._samples = 0
        self._latency_samples = 0
        self._decreases = 0
        self._failures = 0
        self._rebaselines = 0
        self._probing = config.slow_start
        self._anchor = self._estimate  # estimate at the last congestion signal
        self._episode_samples = 0  # consecutive congested samples
        self._episode_peak_estimate = 0.0
        self._episode_peak_rtt = 0.0

    # ------------------------------------------------------------------ reading

    @property
    def config(self) -> LimiterConfig:
        """The configuration this limiter was built with (bounds may differ, see
        :meth:`set_bounds`)."""
        return self._config

    @property
    def min_limit(self) -> int:
        """Current floor (the requested minimum, capped by the current maximum)."""
        return min(self._min_requested, self._max)

    @property
    def max_limit(self) -> int:
        """Current ceiling."""
        return self._max

    @property
    def limit(self) -> int:
        """Current integer limit, always within ``[min_limit, max_limit]``."""
        return max(self.min_limit, min(self._max, int(self._estimate)))

    @property
    def estimated_limit(self) -> float:
        """Unrounded estimate behind :attr:`limit`."""
        return self._estimate

    @property
    def probing(self) -> bool:
        """True while growing exponentially (slow start)."""
        return self._probing

    def available(self, inflight: int) -> int:
        """How many more tasks may be admitted now: ``max(0, limit - inflight)``."""
        return max(0, self.limit - inflight)

    def snapshot(self) -> dict[str, float]:
        """Internal state for metrics and logs (RTTs in seconds, 0 before any sample)."""
        return {
            "limit": float(self.limit),
            "estimated_limit": self._estimate,
            "long_rtt": self._long_rtt,
            "short_rtt": self._short_rtt,
            "samples": float(self._samples),
            "decreases": float(self._decreases),
            "failures": float(self._failures),
            "rebaselines": float(self._rebaselines),
            "probing": 1.0 if self._probing else 0.0,
            "min_limit": float(self.min_limit),
            "max_limit": float(self._max),
        }

    # ------------------------------------------------------------------ writing

    def set_bounds(self, min_limit: int | None = None, max_limit: int | None = None) -> None:
        """Change the bounds (e.g. Ray reports fewer free CPUs) and clamp the estimate.

        A ``max_limit`` below the current minimum wins: the effective floor becomes
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
        if not (math.isfinite(latency_s) and latency_s >= 0.0):
            raise ValueError(f"latency_s must be a finite number >= 0, got {latency_s!r}")
        if inflight < 0:
            raise ValueError(f"inflight must be >= 0, got {inflight}")
        self._samples += 1
        if outcome is Outcome.FAILURE:
            self._failures += 1
            return self.limit
        if outcome is not Outcome.SUCCESS:  # TIMEOUT, RESOURCE
            self._back_off()
            return self.limit

        self._observe(max(latency_s, _MIN_RTT_S))
        if inflight < self._estimate / 2:
            return self.limit  # app-limited: the limit is not being exercised

        estimate = self._estimate
        noise = _NOISE_DEVIATIONS * self._deviation / math.sqrt(max(1.0, estimate))
        tolerated = self._config.rtt_tolerance * self._long_rtt * (1.0 + noise)
        if self._short_rtt > tolerated * (1.0 + _CONGESTION_TASKS / max(1.0, estimate)):
            self._probing = False
            self._anchor = estimate
            if self._regime_changed():
                return self.limit
        else:
            self._episode_samples = 0
            if not self._probing and estimate >= self._anchor + _PROBE_AFTER_TASKS:
                self._probing = True

        smoothing = self._config.smoothing
        queue = float(self._queue_size(int(estimate)))
        if self._probing:
            new = estimate + smoothing * queue
        else:
            gradient = max(0.5, min(1.0, tolerated / self._short_rtt))
            weight = smoothing / max(1.0, estimate)
            new = estimate * (1.0 - weight) + (estimate * gradient + queue) * weight
        self._estimate = self._clamp(new)
        return self.limit

    # ------------------------------------------------------------------ internals

    def _clamp(self, value: float) -> float:
        return max(float(self.min_limit), min(float(self._max), value))

    def _back_off(self) -> None:
        """AIMD multiplicative decrease (TIMEOUT / RESOURCE)."""
        self._estimate = self._clamp(self._estimate * self._config.backoff_ratio)
        self._decreases += 1
        self._probing = False
        self._anchor = self._estimate
        self._episode_samples = 0

    def _observe(self, rtt: float) -> None:
        """Update the short RTT (about one round) and the long (baseline) RTT."""
        rounds = max(1.0, self._estimate)
        self._latency_samples += 1
        if self._short_rtt == 0.0:
            self._short_rtt = rtt
        else:
            deviation = abs(rtt - self._short_rtt) / self._short_rtt
            factor = max(self._long_factor, 1.0 / (self._latency_samples - 1))
            self._deviation += (deviation - self._deviation) * factor
            self._short_rtt += (rtt - self._short_rtt) * 2.0 / (rounds + 1.0)

        if self._warmup < _WARMUP_SAMPLES:
            self._warmup += 1
            self._long_rtt += (rtt - self._long_rtt) / self._warmup
            return
        short, long = self._short_rtt, self._long_rtt
        gate = _BASELINE_GATE_TASKS / rounds + GATE_NOISE * _NOISE_DEVIATIONS * self._deviation / math.sqrt(rounds)
        if short <= long * (1.0 + gate):
            long += (short - long) * self._long_factor
        if long > _DECAY_RATIO * short:
            long *= _DECAY_FACTOR
        self._long_rtt = long

    def _regime_changed(self) -> bool:
        """Track a congestion episode; re-baseline if cutting the limit did not help."""
        estimate, short = self._estimate, self._short_rtt
        if self._episode_samples == 0:
            self._episode_peak_estimate = estimate
            self._episode_peak_rtt = short
        else:
            self._episode_peak_estimate = max(self._episode_peak_estimate, estimate)
            self._episode_peak_rtt = max(self._episode_peak_rtt, short)
        self._episode_samples += 1
        cut = estimate <= max(float(self.min_limit), self._episode_peak_estimate * _REGIME_CUT)
        if (
            cut
            and self._episode_samples >= _REGIME_MIN_ROUNDS * max(1.0, estimate)
            and short >= _REGIME_KEEP * self._episode_peak_rtt
        ):
            self._long_rtt = short
            self._rebaselines += 1
            self._episode_samples = 0
            self._probing = True
            self._anchor = estimate
            return True
        return False

"""The adaptive limiter on a class whose tasks take different times: a closed loop on a fake
clock (pure logic: no Ray, no runtime; seconds to run).

    .venv/bin/python bench/limiter_mixed.py [--samples 8000] [--seeds 1 2 3]

Each task's service time is drawn from a mix (say 80% take 1 ms and 20% take 50 ms, as the
soak's no-ops and 50 ms sleeps do), independently of how many run; with ``knee`` set, a task
admitted while more than ``knee`` are in flight takes ``inflight / knee`` times longer
(queueing). The loop keeps ``limit`` tasks in flight and reports each finish to an
:class:`~rayinfra.scheduling.limiter.AdaptiveLimiter` (default config, ``max_limit`` 256), as
the scheduler does. Printed per mix, knee and seed: the limit over the second half of the run
(min / median / max) and the goodput against the best fixed limit of a sweep in the same loop
(item 4 of issue 14 asks for >= 0.9x). docs/benchmarks.md, "Adaptive limiter", has the runs.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayinfra.scheduling.limiter import AdaptiveLimiter, LimiterConfig

#: name -> ((service time s, share), ...)
MIXES: dict[str, tuple[tuple[float, float], ...]] = {
    "all 10 ms": ((0.010, 1.0),),
    "80% 1 ms, 20% 50 ms": ((0.001, 0.8), (0.050, 0.2)),
    "50% 10 ms, 50% 100 ms": ((0.010, 0.5), (0.100, 0.5)),
    "1, 10, 30, 100 ms": ((0.001, 0.25), (0.010, 0.25), (0.030, 0.25), (0.100, 0.25)),
}
FIXED = (1, 2, 4, 8, 16, 24, 32, 64, 128, 256)
MAX_LIMIT = 256


def run(
    mix: tuple[tuple[float, float], ...],
    samples: int,
    seed: int,
    knee: int | None,
    fixed: int | None = None,
) -> tuple[list[int], float]:
    """(the limit after each finish, goodput over the second half in tasks/s)."""
    rng = random.Random(seed)
    times, shares = zip(*mix, strict=True)
    if fixed is None:
        lim = AdaptiveLimiter(LimiterConfig(max_limit=MAX_LIMIT))
    else:
        lim = AdaptiveLimiter(LimiterConfig(initial_limit=fixed, min_limit=fixed, max_limit=fixed))
    heap: list[tuple[float, int, float]] = []
    now, inflight, seq, limits = 0.0, 0, 0, []
    half_at = 0.0
    for i in range(samples):
        while inflight < lim.limit:
            inflight += 1
            service = rng.choices(times, shares)[0] * (1 + rng.uniform(-0.03, 0.03))
            if knee is not None:
                service *= max(1.0, inflight / knee)
            seq += 1
            heapq.heappush(heap, (now + service, seq, service))
        now, _, latency = heapq.heappop(heap)
        lim.record(latency, inflight)
        inflight -= 1
        limits.append(lim.limit)
        if i == samples // 2:
            half_at = now
    return limits, (samples - samples // 2) / (now - half_at)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=8000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    print(
        "| tasks | knee | seed | adaptive limit (2nd half: min / median / max) | goodput, "
        "adaptive / best fixed (limit) |"
    )
    print("|---|---:|---:|---|---|")
    for name, mix in MIXES.items():
        for knee in (None, 16):
            for seed in args.seeds:
                limits, rate = run(mix, args.samples, seed, knee)
                tail = limits[len(limits) // 2 :]
                best, best_at = max(
                    (run(mix, args.samples, seed, knee, fixed=f)[1], f) for f in FIXED
                )
                print(
                    f"| {name} | {knee or 'none'} | {seed} | {min(tail)} / "
                    f"{statistics.median(tail):g} / {max(tail)} | "
                    f"{rate:,.0f} / {best:,.0f} tasks/s = **{rate / best:.2f}x** ({best_at}) |"
                )


if __name__ == "__main__":
    main()

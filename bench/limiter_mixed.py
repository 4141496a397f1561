"""The adaptive limiter on a class whose tasks take different times: the closed loop of the
limiter's unit tests on a fake clock (pure logic: no Ray, no runtime; seconds to run).

    .venv/bin/python bench/limiter_mixed.py [--samples 6000] [--seeds 1 2 3]

Each task's service time is drawn from a mix (say 80% take 1 ms and 20% take 50 ms, as the
soak's no-ops and 50 ms sleeps do), independently of how many run; with a knee, a task
admitted while more than ``knee`` are in flight takes ``inflight / knee`` times longer
(queueing). ``tests/unit/test_limiter.py``'s ``simulate`` keeps ``limit`` tasks in flight and
reports each finish to an :class:`~rayinfra.scheduling.limiter.AdaptiveLimiter` (default
config, ``max_limit`` 256), as the scheduler does. Printed per mix, knee and seed: the limit
over the second half of the run (min / median / max) and the goodput against the best fixed
limit of a sweep in the same loop (item 4 of issue 14 asks for >= 0.9x). docs/benchmarks.md,
"Adaptive limiter", has the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayinfra.scheduling.limiter import AdaptiveLimiter, LimiterConfig
from tests.unit.test_limiter import MIXES, constant, mixed, simulate

#: name -> ((service time s, share), ...): the unit tests' mixes and a steady control
RUNS = {"all 10 ms": ((0.010, 1.0),), **MIXES}
FIXED = (1, 2, 4, 8, 16, 24, 32, 64, 128, 256)
MAX_LIMIT = 256
NO_KNEE = 10**9


def run(
    mix: tuple[tuple[float, float], ...], samples: int, seed: int, knee: int, fixed: int = 0
) -> tuple[list[int], float]:
    """(the limit after each finish, goodput over the second half in tasks/s); ``fixed``: a
    fixed limit instead of the adaptive one."""
    config = (
        LimiterConfig(initial_limit=fixed, min_limit=fixed, max_limit=fixed)
        if fixed
        else LimiterConfig(max_limit=MAX_LIMIT)
    )
    trace = simulate(
        AdaptiveLimiter(config), samples, constant(knee), base=mixed(mix, seed), seed=seed
    )
    half = samples // 2
    return trace.limits, (samples - 1 - half) / (trace.times[-1] - trace.times[half])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    print(
        "| tasks | knee | seed | adaptive limit (2nd half: min / median / max) | goodput, "
        "adaptive / best fixed (limit) |"
    )
    print("|---|---:|---:|---|---|")
    for name, mix in RUNS.items():
        for knee in (NO_KNEE, 16):
            for seed in args.seeds:
                limits, rate = run(mix, args.samples, seed, knee)
                tail = limits[len(limits) // 2 :]
                best, best_at = max(
                    (run(mix, args.samples, seed, knee, fixed=f)[1], f) for f in FIXED
                )
                print(
                    f"| {name} | {'none' if knee == NO_KNEE else knee} | {seed} | {min(tail)} / "
                    f"{statistics.median(tail):g} / {max(tail)} | "
                    f"{rate:,.0f} / {best:,.0f} tasks/s = **{rate / best:.2f}x** ({best_at}) |"
                )


if __name__ == "__main__":
    main()

"""Running one fuzz target: its examples from several processes and threads at once, counted.

Each worker (tests/fuzz/work.py: ``FUZZ_PROCESSES`` processes, default one per CPU, each with
``FUZZ_THREADS`` threads) runs the same hypothesis test with its own seed (derived from the
target, so a run is reproducible) and a share of the profile's ``max_examples``; together they
run at least that many. Drawing examples is most of the client's cost and holds the GIL:
processes draw in parallel, threads keep the server busy while one draws (a valid request to a
streaming RPC is read for a fixed window). A failure in any thread stops the others of its
process at their next example and comes back with hypothesis' report (its minimal failing
example).
"""

from __future__ import annotations

import math
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

#: the profiles (registered in tests/fuzz/conftest.py): FUZZ_PROFILE names one, else CI=true
#: selects the CI profile (10,000 examples per RPC and route, about 15 min of fuzzing here), else
#: the quick one (60); the full one (30,000 per RPC and route) is run by hand for a change to the
#: gateway: ``FUZZ_PROFILE=fuzz-full ./scripts/test.sh tests/fuzz`` (docs/benchmarks.md, "Fuzzer")
QUICK, CI, FULL = "fuzz", "fuzz-ci", "fuzz-full"
LONG_PROFILES = (CI, FULL)
#: examples drawn per hypothesis test case (see :func:`fuzz`)
BATCH = 10


def profile_name() -> str:
    return os.environ.get("FUZZ_PROFILE") or (CI if os.environ.get("CI") == "true" else QUICK)


def register_profiles() -> None:
    """Registered under names of their own: hypothesis' built-in ``ci`` profile is active in
    CI for every other hypothesis test of the suite, which must not get thousands of examples."""
    common: dict[str, Any] = {
        "database": None,  # examples are regenerated from the seeds, never stored
        "deadline": None,  # a server's latency is not the test's concern: the call deadline is
        "derandomize": False,  # each thread has its own seed (below)
        "suppress_health_check": list(HealthCheck),  # large and slow examples on purpose
        "phases": (Phase.explicit, Phase.generate, Phase.shrink),
        "print_blob": True,
    }
    settings.register_profile(QUICK, max_examples=60, **common)
    settings.register_profile(CI, max_examples=10_000, **common)
    settings.register_profile(FULL, max_examples=30_000, **common)


@dataclass
class Tally:
    """What one target's examples got: outcome -> count, and the task ids it created."""

    target: str
    outcomes: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: str, task_ids: tuple[str, ...] = ()) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            self.accepted.update(task_ids)

    @property
    def examples(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        rate = self.examples / self.seconds if self.seconds else 0.0
        codes = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common())
        return (
            f"{self.target}: {self.examples} examples in {self.seconds:.1f} s "
            f"({rate:.0f}/s): {codes}"
        )


def fuzz(
    target: str,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any, Tally], None],
    threads: int,
    examples: int | None = None,
    seed_key: str = "",
    tally: Tally | None = None,
) -> Tally:
    """Run ``check(example, tally)`` on at least ``examples`` (default: the profile's
    ``max_examples``) examples of ``strategy``, from ``threads`` threads of this process, each
    seeded from ``target``, ``seed_key`` and its number; return the tally (``tally``: kept up to
    date as they run, for a caller that needs it when one fails).

    Each hypothesis test case draws :data:`BATCH` examples and checks them in turn: drawing one
    at a time costs 0.7-2.7 ms of hypothesis' own bookkeeping per example, ten at a time 0.2-0.7
    ms each (measured on the CI machine; docs/benchmarks.md, "Fuzzer"), which is what lets the CI
    profiles' thousands of examples per RPC and route fit in their time. A failure names the example that
    failed; hypothesis shrinks the batch's others to their simplest."""
    parent = settings.get_profile(profile_name())
    share = math.ceil((examples or parent.max_examples) / threads)
    cases = math.ceil(share / BATCH)
    tally = tally if tally is not None else Tally(target)
    failures: list[BaseException] = []
    stop = threading.Event()

    def work(i: int) -> None:
        @settings(parent, max_examples=cases)
        @seed(zlib.crc32(f"{target}#{seed_key}{i}".encode()))
        @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
        def run(batch: list[Any]) -> None:
            for example in batch:
                if stop.is_set():
                    return
                check(example, tally)

        try:
            run()
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
            failures.append(e)
            stop.set()

    started = time.monotonic()
    pool = [
        threading.Thread(target=work, args=(i,), name=f"fuzz-{i}", daemon=True)
        for i in range(threads)
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    tally.seconds = time.monotonic() - started
    if failures:
        raise failures[0]
    return tally

"""The cyclic garbage collector's settings for the runtime's long-lived actor processes.

The scheduler holds every task it answers for (a row, a spec, a queue entry: several container
objects each, a million when a million are queued) and allocates a few short-lived containers
per task it moves. With CPython's default thresholds, ``(700, 10, 10)``, a young collection runs
every 700 net allocations and every hundredth of them a middle one, which keeps promoting into
the old generation whose full passes traverse every live task. Almost nothing the hot paths
allocate is cyclic, so those passes find nothing: a larger first threshold makes the older
generations' passes ~70x rarer, and freezing what start-up built (modules, config, handlers)
takes it out of every pass. Cycles are still collected, later.

Measured (docs/benchmarks.md, session 15): the scheduler's state machine with 300,000 other live
objects 8.5 -> 7.9 us per task; the scheduler actor 3-6 us less CPU per task in each of three
back-to-back pairs of runs (within the host's run-to-run noise, so indicative only).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)
"""``gc.set_threshold`` of a tuned process: young collections every 50,000 net allocations."""


def tune_for_long_lived_process() -> None:
    """Freeze what exists now (never scanned again) and raise the collector's thresholds."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)

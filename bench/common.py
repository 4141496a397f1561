"""What every benchmark in bench/ shares: percentiles and the markdown table it prints."""

from __future__ import annotations

import time

import psutil
import ray


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """``## rayinfra <title> benchmark (machine, date, Ray)`` and a measure/value/note table."""
    print(
        f"\n## rayinfra {title} benchmark ({psutil.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}, ray {ray.__version__})\n"
    )
    print("| measure | value | note |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")

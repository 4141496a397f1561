"""The soak's CI version: ``bench/soak.py`` for five minutes (mixed submits, cancels, streams,
service restarts and CLI calls against a runtime of its own; every process's RSS, fds and
threads sampled every 15 s). It fails when a process grows over the second half beyond the
script's stated slack, or when an acknowledged task does not end as it should. The hour-long
run is the same script (docs/benchmarks.md, "Soak")."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.timeout(1200)
def test_five_minutes_of_mixed_load_leave_every_process_flat(tmp_path: Path) -> None:
    samples = tmp_path / "soak.json"  # not over the recorded hour-long run's
    argv = ["--minutes", "5", "--sample-s", "15", "--plot", "", "--samples", str(samples)]
    res = subprocess.run(
        [sys.executable, str(SOAK), *argv],
        capture_output=True,
        text=True,
        timeout=1100,
    )
    report = res.stdout + res.stderr[-3000:]
    assert res.returncode == 0, report
    assert "verdict: flat / no errors" in res.stdout, report
    assert "'submitted': " in res.stdout and "'service restarts': " in res.stdout, report
    assert "client" in json.loads(samples.read_text()), report  # the samples went where asked
    # nothing it started outlives it: the runtime, and the service it started (its supervisor)
    root = re.search(r"^runtime root: (\S+)$", res.stdout, re.M)
    assert root is not None, report

    def left() -> list[str]:
        return [
            f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:200]}"
            for p in psutil.process_iter(["cmdline"])
            if root[1] in " ".join(p.info["cmdline"] or [])
        ]

    with contextlib.suppress(AssertionError):  # a process may take a moment to exit
        wait_until("every process of the soak's runtime to be gone", lambda: not left())
    assert left() == []

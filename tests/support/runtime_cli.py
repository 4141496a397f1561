"""A test's own runtime driven from outside, as a user drives it: the ``rayinfra`` CLI in a
subprocess (so the test process never becomes a driver of that runtime's Ray cluster), and a
whole-runtime crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from rayinfra.connection import pid_alive
from rayinfra.head import session_members
from tests.conftest import RuntimeSpec

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]


def cli(
    spec: RuntimeSpec, *args: str, timeout: float = 180, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``rayinfra ARGS`` with the spec's config; with ``check``, fail the test on a non-zero
    exit, showing its output."""
    done = subprocess.run(
        [*RAYINFRA, *args], env=spec.env(), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"rayinfra {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def kill_runtime(spec: RuntimeSpec) -> None:
    """SIGKILL every process of the head's session: Ray, the control actors, the executors."""
    conn = json.loads((spec.state_dir / "connection.json").read_text())
    members = session_members(conn["head_pid"])
    assert members, "the head's session is empty"
    for pid in members:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in members):
        assert time.monotonic() < deadline, "the runtime's processes did not die"
        time.sleep(0.1)

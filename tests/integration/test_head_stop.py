"""``head.stop_head`` against real process trees: what a stopped head leaves behind in its
session is stopped too, and a head that will not stop is reported, not killed, without force."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rayinfra.connection import pid_alive
from rayinfra.head import session_members, stop_head

# A stand-in head: its own session, one child that ignores SIGTERM (as the multiprocessing
# resource tracker under Ray's dashboard does), and a SIGTERM disposition chosen per test.
HEAD = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE, text=True)
child.stdout.readline()  # its SIGTERM disposition is set
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""


@contextmanager
def fake_head(on_sigterm: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HEAD, on_sigterm],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # both have set their SIGTERM dispositions (the test's timeout bounds the wait)
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        stop_head(proc.pid, timeout_s=1, force=True)
        proc.wait(timeout=10)


def test_what_a_stopped_head_leaves_in_its_session_is_killed_after_the_grace() -> None:
    with fake_head("exit") as proc:
        child = [p for p in session_members(proc.pid) if p != proc.pid]
        assert len(child) == 1
        assert stop_head(proc.pid, timeout_s=5, force=False) == []
        assert not pid_alive(child[0])
        assert session_members(proc.pid) == []


def test_a_head_that_will_not_stop_is_reported_not_killed_without_force() -> None:
    with fake_head("ignore") as proc:
        left = stop_head(proc.pid, timeout_s=0.5, force=False)
        assert proc.pid in left and len(left) == 2
        assert pid_alive(proc.pid)
        assert stop_head(proc.pid, timeout_s=0.5, force=True) == []

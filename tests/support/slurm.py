"""Helpers of the Slurm tests: golden files, the real single-node Slurm, bounded waits."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from rayinfra.slurm.cli import SlurmCli
from rayinfra.slurm.errors import SlurmUnavailableError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "slurm"
T = TypeVar("T")


def assert_golden(name: str, text: str) -> None:
    """``text`` equals ``tests/golden/slurm/<name>``; ``UPDATE_GOLDEN=1`` rewrites the file."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with UPDATE_GOLDEN=1")
    expected = path.read_text()
    assert text == expected, f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)"


def golden_text(name: str) -> str:
    """An input file kept beside the golden files (a template of the original bridge)."""
    return (GOLDEN / name).read_text()


def require_slurm(cli: SlurmCli | None = None) -> SlurmCli:
    """The real Slurm of this machine, or a failure that says how to start it (never a skip:
    CI installs Slurm, TESTING.md)."""
    cli = cli or SlurmCli(timeout_s=20)
    try:
        cli.ping()
    except SlurmUnavailableError as e:
        pytest.fail(f"Slurm is not running here ({e}); start it: source .ci/setup.d/40-slurm.sh")
    return cli


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, poll_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something other than None/False; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)

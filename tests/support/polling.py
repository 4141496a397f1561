"""Waiting in tests for something that becomes true in its own time."""

from __future__ import annotations

import time
from typing import Any


def wait_until(what: str, pred: Any, timeout: float = 30.0, step: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy (returned); fail naming ``what`` and
    the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")

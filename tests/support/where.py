"""Task functions that say where they ran (for `python` tasks in multi-node tests)."""

from __future__ import annotations

import time

import ray


def node_id(seconds: float = 0.0) -> str:
    """The Ray node this task ran on, after ``seconds`` of sleep."""
    time.sleep(seconds)
    return str(ray.get_runtime_context().get_node_id())

"""Running one handler in a Ray task of its own: how a task with its own runtime_env executes.

The executor actor's process has the class's runtime_env; a task that brings another one runs
here instead, in a worker Ray starts with that environment. No Ray import: ``raywrap`` submits it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rayinfra.handlers.context import TaskContext
from rayinfra.handlers.registry import HandlerRegistry


def run_handler(
    config_handlers: Mapping[str, str],
    payload: dict[str, Any],
    task_id: str,
    task_class: str,
    attempt: int,
    timeout_s: float | None,
    remaining_s: float | None,
) -> Any:
    """Build a registry in this worker and run ``payload`` through it (deadline carried over)."""
    ctx = TaskContext(
        task_id=task_id,
        task_class=task_class,
        attempt=attempt,
        timeout_s=timeout_s,
        deadline=None if remaining_s is None else time.monotonic() + remaining_s,
    )
    return HandlerRegistry(config_handlers).run(payload, ctx)

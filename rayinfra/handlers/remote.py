"""Running one handler in a Ray task of its own: how a task with its own runtime_env executes.

The executor actor's process has the class's runtime_env; a task that brings another one runs
here instead, in a worker Ray starts with that environment. No Ray import: ``raywrap`` submits it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from rayinfra.handlers.context import TaskContext
from rayinfra.handlers.registry import HandlerRegistry


def _make_interruptible() -> None:
    """Let Ray's cancel reach this task.

    Ray cancels a running task with ``_thread.interrupt_main()``, which does nothing while
    SIGINT is ignored or left at its default. A worker inherits SIGINT ignored when the head was
    started from a background shell job (``cmd &`` in a script ignores SIGINT): then a cancelled
    shell task kept running. Python's own handler makes the interrupt a KeyboardInterrupt, which
    the shell handler turns into killing its process group.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    _make_interruptible()
    ctx = TaskContext(
        task_id=task_id,
        task_class=task_class,
        attempt=attempt,
        timeout_s=timeout_s,
        deadline=None if remaining_s is None else time.monotonic() + remaining_s,
    )
    return HandlerRegistry(config_handlers).run(payload, ctx)

"""Task handlers: what a scheduler's executor runs for ``payload["type"]``.

A handler is ``fn(payload: dict, ctx: TaskContext) -> JSON``. :class:`HandlerRegistry` resolves a
type to a builtin (``noop``, ``echo``, ``sleep``, ``shell``, ``python``), a config handler or a
``rayinfra.handlers`` entry point and runs it.
"""

from __future__ import annotations

from rayinfra._deprecation import renamed
from rayinfra.handlers.builtin import echo_handler, noop_handler, python_handler, sleep_handler
from rayinfra.handlers.context import (
    HandlerError,
    HandlerLoadError,
    TaskCancelledError,
    TaskContext,
    TaskFailedError,
    UnknownHandlerError,
)
from rayinfra.handlers.registry import (
    ENTRY_POINT_GROUP,
    Handler,
    HandlerInfo,
    HandlerRegistry,
    builtin_handlers,
)
from rayinfra.handlers.shell import (
    KILL_GRACE_S,
    OUTPUT_CAP_BYTES,
    kill_process_group,
    run_command,
    shell_handler,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "KILL_GRACE_S",
    "OUTPUT_CAP_BYTES",
    "Handler",
    "HandlerError",
    "HandlerInfo",
    "HandlerLoadError",
    "HandlerRegistry",
    "TaskCancelledError",
    "TaskContext",
    "TaskFailedError",
    "UnknownHandlerError",
    "builtin_handlers",
    "echo_handler",
    "kill_process_group",
    "noop_handler",
    "python_handler",
    "run_command",
    "shell_handler",
    "sleep_handler",
]

__getattr__ = renamed(
    __name__, {n: f"{n}Error" for n in ("TaskCancelled", "TaskFailed", "UnknownHandler")}
)

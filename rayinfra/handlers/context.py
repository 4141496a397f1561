"""What a task handler receives besides its payload, and the errors handlers raise.

A handler is called as ``fn(payload, ctx)`` where ``ctx`` is a :class:`TaskContext`. Handlers that
run for a while poll :meth:`TaskContext.cancelled` and :meth:`TaskContext.remaining` and raise
:class:`TaskCancelledError` or :class:`TimeoutError` themselves; the executor cannot interrupt a thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HandlerError",
    "HandlerLoadError",
    "TaskCancelledError",
    "TaskContext",
    "TaskFailedError",
    "UnknownHandlerError",
    "format_seconds",
]


class TaskCancelledError(Exception):
    """Raised by a handler that stopped because its context was cancelled."""


class TaskFailedError(Exception):
    """The task ran and failed, and its result is worth keeping (e.g. a shell task's output).

    ``result`` is the JSON result recorded for the failed task.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class HandlerError(ValueError):
    """A payload the handler cannot run; the message names the key, e.g. ``payload.argv: ...``."""


class UnknownHandlerError(LookupError):
    """No handler is registered for a task type; the message lists the known types."""


_CANCEL_EVENT_LOCK = threading.Lock()


@dataclass
class TaskContext:
    """Per-attempt facts a handler may use.

    ``deadline`` is a :func:`time.monotonic` instant (``None``: no deadline); ``timeout_s`` is the
    task's configured timeout and is used in messages. ``output_dir`` is where handlers keep full
    output files; it is created on demand. ``cancel_event`` is set by the executor to cancel.
    """

    task_id: str
    task_class: str
    attempt: int = 1
    timeout_s: float | None = None
    deadline: float | None = None
    output_dir: Path | None = None
    _cancel: threading.Event | None = field(default=None, repr=False)

    @property
    def cancel_event(self) -> threading.Event:
        """Created on first use: most tasks (an inline handler's) never need one."""
        if self._cancel is None:
            with _CANCEL_EVENT_LOCK:  # the handler's thread and the executor may race here
                if self._cancel is None:
                    self._cancel = threading.Event()
        return self._cancel

    @cancel_event.setter
    def cancel_event(self, event: threading.Event) -> None:
        self._cancel = event

    def cancelled(self) -> bool:
        """True once the task was asked to stop."""
        return self._cancel is not None and self._cancel.is_set()

    def remaining(self) -> float | None:
        """Seconds until the deadline (``<= 0`` once past it), or ``None`` without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def timeout_error(self, prefix: str, started: float) -> TimeoutError:
        """A ``TimeoutError("<prefix>timed out after Xs")`` for this context.

        X is ``timeout_s`` when set, otherwise the seconds since ``started`` (a monotonic instant).
        """
        seconds = self.timeout_s if self.timeout_s is not None else time.monotonic() - started
        return TimeoutError(f"{prefix}timed out after {format_seconds(seconds)}s")

    def stop_error(self, prefix: str, started: float) -> TaskCancelledError | TimeoutError | None:
        """What to raise now: :class:`TaskCancelledError` once cancelled, else a
        :meth:`timeout_error` once past the deadline; ``None`` while the task may go on."""
        if self.cancelled():
            return TaskCancelledError(f"task {self.task_id} cancelled")
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            return self.timeout_error(prefix, started)
        return None


def format_seconds(seconds: float) -> str:
    """``60.0`` -> ``"60"``, ``0.25`` -> ``"0.25"``: at most millisecond precision, no trailing zeros."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


class HandlerLoadError(UnknownHandlerError):
    """A registered handler (config or entry point) could not be imported.

    A subclass of :class:`UnknownHandlerError`: either way the task type cannot be run.
    """

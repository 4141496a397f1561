"""Built-in task handlers: ``noop``, ``echo``, ``sleep`` and ``python``.

``shell`` lives in :mod:`rayinfra.handlers.shell`. Every handler has the signature
``fn(payload, ctx) -> JSON``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import time
from collections.abc import Awaitable
from typing import Any

from rayinfra.handlers._targets import load_target
from rayinfra.handlers.context import HandlerError, TaskCancelledError, TaskContext

__all__ = ["echo_handler", "noop_handler", "python_handler", "sleep_handler"]

_ASYNC_POLL_S = 0.05
_CANCEL_GRACE_S = 2.0


def noop_handler(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Do nothing; the result is ``{}``."""
    return {}


def echo_handler(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Return the payload without its ``type`` key (a shallow copy)."""
    return {k: v for k, v in payload.items() if k != "type"}


def sleep_handler(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Wait ``payload["seconds"]`` (a finite number >= 0); the result is ``{"slept": seconds}``.

    Raises TaskCancelledError as soon as ``ctx`` is cancelled and TimeoutError
    (``"timed out after Xs"``) when the context's deadline comes first.
    """
    seconds = payload.get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise HandlerError(f"payload.seconds: must be a number >= 0, got {seconds!r}")
    started = time.monotonic()
    end = started + seconds
    while True:
        if ctx.cancelled():
            raise TaskCancelledError(f"task {ctx.task_id} cancelled")
        now = time.monotonic()
        left = end - now
        remaining = ctx.remaining()
        if remaining is not None and remaining <= 0 and left > 0:
            raise ctx.timeout_error("", started)
        if left <= 0:
            return {"slept": seconds}
        wait = left if remaining is None else min(left, remaining)
        ctx.cancel_event.wait(max(wait, 0.0))


def python_handler(payload: dict[str, Any], ctx: TaskContext) -> Any:
    """Call ``payload["function"]`` (``"pkg.mod:fn"``) with optional ``args`` and ``kwargs``.

    A coroutine (or other awaitable) result is run to completion with :func:`asyncio.run` in the
    calling thread, and is cancelled when ``ctx`` is cancelled (TaskCancelledError) or past its deadline
    (TimeoutError). A plain function cannot be interrupted once called. The return value must be
    JSON-serialisable; it is returned unchanged. Exceptions raised by the function propagate.
    """
    spec = payload.get("function")
    try:
        target = load_target(spec)  # type: ignore[arg-type]  # parse_target checks the type
    except (ValueError, LookupError) as exc:
        raise HandlerError(f"payload.function: {exc}") from exc
    if not callable(target):
        raise HandlerError(f"payload.function: {spec!r} is not callable")
    args = payload.get("args", [])
    if not isinstance(args, list):
        raise HandlerError(f"payload.args: must be a list, got {type(args).__name__}")
    kwargs = payload.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise HandlerError("payload.kwargs: must be an object with string keys")
    error = ctx.stop_error("python task ", time.monotonic())
    if error is not None:
        raise error
    result = target(*args, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_drive(result, ctx))
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise HandlerError(
            f"payload.function: {spec!r} returned a non-JSON value of type {type(result).__name__}"
        ) from exc
    return result


async def _drive(awaitable: Awaitable[Any], ctx: TaskContext) -> Any:
    """Await ``awaitable``, cancelling it when ``ctx`` is cancelled or its deadline passes."""
    started = time.monotonic()
    task = asyncio.ensure_future(awaitable)
    while True:
        remaining = ctx.remaining()
        wait = _ASYNC_POLL_S if remaining is None else max(0.0, min(_ASYNC_POLL_S, remaining))
        done, _ = await asyncio.wait({task}, timeout=wait)
        if done:
            return task.result()
        error = ctx.stop_error("python task ", started)
        if error is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_GRACE_S)
            raise error

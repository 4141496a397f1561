"""Executor actors (``executor-<class>-<n>``): run batches of tasks, hand results back in batches.

Long-lived and owned by the scheduler (they die with it). ``submit(batch)`` starts every task of a
batch at once and returns the results of those that ended during it: trivial handlers (``noop``,
``echo``) run inline on the event loop, so their results ride on the submit's reply (no second
call). Everything else runs in a thread, with its own deadline and cancel event, and the
scheduler keeps one ``take_results`` long-poll outstanding per executor, which returns whatever
finished since the last call. No Ray import: :mod:`rayinfra.raywrap` makes it an actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rayinfra.config import RayinfraConfig
from rayinfra.gc_tuning import tune_for_long_lived_process
from rayinfra.handlers import (
    HandlerError,
    HandlerRegistry,
    TaskCancelledError,
    TaskContext,
    TaskFailedError,
    UnknownHandlerError,
)
from rayinfra.json_encode import compact_encoder
from rayinfra.scheduling.limiter import Outcome
from rayinfra.scheduling.state import TaskResult, payload_of

RESULT_LINGER_S = 0.002  # gather results finishing together into one reply (while others run)
TIMEOUT_GRACE_S = 2.0  # a handler that ignores its deadline is abandoned after this
EARLY_CANCELS_KEPT = 4096  # cancels of tasks not (yet) here, remembered for a later submit
_encode = compact_encoder()  # accepts what json.dumps does (and the store's encoder)


class ExecutorActor:
    """Runs tasks of one class; results are collected by the scheduler with ``take_results``."""

    def __init__(self, task_class: str, config: dict[str, Any], threads: int) -> None:
        from rayinfra import raywrap

        if raywrap.in_actor():  # (not when a test builds one in its own process)
            tune_for_long_lived_process()
        self.task_class = task_class
        self.config = RayinfraConfig.model_validate(config)
        self.registry = HandlerRegistry(self.config.handlers)
        out = self.config.state.dir / "task_output"
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError:  # a worker node without the head's state dir
            out = Path(tempfile.gettempdir()) / "rayinfra-task-output"
            out.mkdir(parents=True, exist_ok=True)
        self.output_dir = out
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="task")
        self.running: dict[str, tuple[TaskContext, asyncio.Task[None]]] = {}
        self.results: list[TaskResult] = []
        self.results_ready = asyncio.Event()
        # cancels that overtook their task's submit (an async actor may run calls out of order)
        self._cancelled_early: OrderedDict[str, None] = OrderedDict()
        self.pid = os.getpid()
        self._envs: dict[str, dict[str, Any]] = {}  # task runtime_env -> uploaded form

    async def ping(self) -> dict[str, Any]:
        from rayinfra import raywrap

        return {
            "task_class": self.task_class,
            "pid": self.pid,
            "node_id": raywrap.current_node_id(),
            "running": len(self.running),
        }

    async def submit(self, batch: Sequence[tuple[Any, ...]]) -> tuple[tuple[Any, ...], ...]:
        """Start each task (a :class:`~rayinfra.scheduling.state.Dispatch` as a plain tuple:
        ``(task_id, payload, timeout_s, attempt, runtime_env)``); returns the results of those
        that ended already (inline handlers, tasks cancelled before they arrived), which
        ``take_results`` then does not return again. Results go as plain tuples
        (:func:`wire_results`)."""
        ended: list[TaskResult] = []
        for tid, sent, timeout, attempt, env in batch:
            if tid in self.running:  # a re-dispatch of what already runs here: keep one
                continue
            if tid in self._cancelled_early:  # cancelled before it arrived
                del self._cancelled_early[tid]
                ended.append(TaskResult(tid, Outcome.CANCELLED, "cancelled"))
                continue
            ctx = TaskContext(
                task_id=tid,
                task_class=self.task_class,
                attempt=attempt,
                timeout_s=timeout,
                deadline=time.monotonic() + timeout if timeout else None,
                output_dir=self.output_dir,
            )
            payload = payload_of(sent)
            inline = None if env else self._inline(payload)
            if inline is not None:  # trivial: done before the next task starts, no task object
                started, t0 = time.time(), time.monotonic()
                try:
                    done = self._succeeded(inline(payload, ctx))
                except Exception as e:  # noqa: BLE001 - a task's own exception is its failure
                    done = _failed(e, ctx)
                ended.append(TaskResult(tid, *done, started, time.time(), time.monotonic() - t0))
                continue
            task = asyncio.create_task(self._run(ctx, payload, env))
            self.running[tid] = (ctx, task)
        return wire_results(ended)

    def _inline(self, payload: dict[str, Any]) -> Any:
        """The handler of a payload whose type runs inline on the loop (``noop``, ``echo``)."""
        type_name = payload.get("type")
        if not isinstance(type_name, str):
            return None
        try:
            info = self.registry.get(type_name)
        except UnknownHandlerError:
            return None  # _call reports it
        return None if info.blocking else info.fn

    @staticmethod
    def _succeeded(value: Any) -> tuple[Outcome, str, Any]:
        _encode(value)  # a non-JSON return fails the task here, not in the scheduler
        return Outcome.SUCCESS, "", value

    async def _run(
        self, ctx: TaskContext, payload: dict[str, Any], runtime_env: dict[str, Any] | None
    ) -> None:
        started = time.time()
        t0 = time.monotonic()
        try:
            if runtime_env:
                value = await self._call_in_env(ctx, payload, runtime_env)
            else:
                value = await self._call(ctx, payload)
            ended = self._succeeded(value)
        except Exception as e:  # noqa: BLE001 - a task's own exception is its failure
            ended = _failed(e, ctx)
        self.running.pop(ctx.task_id, None)
        self._report(TaskResult(ctx.task_id, *ended, started, time.time(), time.monotonic() - t0))

    def _report(self, result: TaskResult) -> None:
        self.results.append(result)
        self.results_ready.set()

    async def _call(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        type_name = payload.get("type")
        if not isinstance(type_name, str):
            raise HandlerError(
                "payload.type: missing (choose one of: " + ", ".join(self.registry.names()) + ")"
            )
        info = self.registry.get(type_name)
        if not info.blocking:
            return info.fn(payload, ctx)
        fut = asyncio.get_running_loop().run_in_executor(self.pool, info.fn, payload, ctx)
        remaining = ctx.remaining()
        try:
            if remaining is None:
                return await asyncio.shield(fut)
            return await asyncio.wait_for(
                asyncio.shield(fut), max(0.0, remaining) + TIMEOUT_GRACE_S
            )
        except asyncio.CancelledError:
            ctx.cancel_event.set()  # the thread sees it; we report cancelled
            raise TaskCancelledError() from None

    async def _call_in_env(
        self, ctx: TaskContext, payload: dict[str, Any], runtime_env: dict[str, Any]
    ) -> Any:
        """A task with its own runtime_env runs as a Ray task in that environment; cancel and
        deadline are forwarded as ``ray.cancel`` (which a shell handler turns into killing its
        process group)."""
        from rayinfra import raywrap
        from rayinfra.handlers.remote import run_handler

        key = json.dumps(runtime_env, sort_keys=True)
        env = self._envs.get(key)
        if env is None:
            env = await asyncio.to_thread(raywrap.upload_runtime_env, runtime_env)
            self._envs[key] = env
        remaining = ctx.remaining()
        ref = raywrap.submit_function(
            run_handler,
            [
                dict(self.config.handlers),
                payload,
                ctx.task_id,
                ctx.task_class,
                ctx.attempt,
                ctx.timeout_s,
                remaining,
            ],
            env,
        )
        fut = asyncio.ensure_future(ref)
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=0.1)
                if done:
                    try:
                        return fut.result()
                    except Exception as e:  # noqa: BLE001 - re-raised as the task's own error
                        raise raywrap.unwrap_task_error(e) from None
                if ctx.cancelled():
                    raise TaskCancelledError()
                left = ctx.remaining()
                if left is not None and left < -TIMEOUT_GRACE_S:
                    raise TimeoutError(f"timed out after {ctx.timeout_s:g}s")
        except BaseException:
            if not fut.done():
                raywrap.cancel(ref)
            raise

    async def take_results(self, timeout_s: float) -> tuple[tuple[Any, ...], ...]:
        """Results finished since the last call; waits up to ``timeout_s`` for the first one."""
        if not self.results:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.results_ready.wait(), timeout_s)
            if self.results and self.running:  # more may end together; a lone one goes now
                await asyncio.sleep(RESULT_LINGER_S)
        out, self.results = self.results, []
        self.results_ready.clear()
        return wire_results(out)

    async def cancel(self, task_ids: list[str]) -> list[str]:
        """Cancel running tasks: handlers see their cancel event (shell kills its process group).
        A task not here yet is remembered: if its submit comes later, it ends cancelled."""
        hit = []
        for tid in task_ids:
            entry = self.running.get(tid)
            if entry is None:
                self._cancelled_early[tid] = None
                while len(self._cancelled_early) > EARLY_CANCELS_KEPT:
                    self._cancelled_early.popitem(last=False)
                continue
            ctx, task = entry
            ctx.cancel_event.set()
            if not task.done():
                hit.append(tid)
        return hit


def wire_results(results: list[TaskResult]) -> tuple[tuple[Any, ...], ...]:
    """Results as a tuple of plain tuples for the reply to the scheduler (which takes either
    form): Ray pickles a named tuple by reference to its class, item by item, ~8x a plain
    tuple's cost, and a list of tuples item by item too (:mod:`rayinfra.raywrap`)."""
    return tuple(map(tuple, results))


def _failed(e: BaseException, ctx: TaskContext) -> tuple[Outcome, str, Any]:
    """``(outcome, error, result)`` of an attempt that raised ``e``."""
    if isinstance(e, TaskCancelledError):
        return Outcome.CANCELLED, "cancelled", None
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
        error = f"timed out after {ctx.timeout_s:g}s" if ctx.timeout_s else "timed out"
        return Outcome.TIMEOUT, error, None
    if isinstance(e, TaskFailedError):
        return Outcome.FAILURE, str(e), e.result
    if isinstance(e, (HandlerError, UnknownHandlerError)):
        return Outcome.INVALID, str(e), None
    return Outcome.FAILURE, f"{type(e).__name__}: {e}", None

"""The scheduler's executor pools: create, watch, scale out and retire ``executor-<class>-<n>``.

One pool per task class; the scheduler names executors, this module holds their handles (every
Ray call goes through :mod:`rayinfra.raywrap`). Each executor gets one long-poll
(``take_results``) that hands its results to the scheduler; an executor that dies, or never
starts (e.g. its runtime_env cannot be set up), is reported back so its tasks re-run or its
class's queue fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rayinfra import raywrap
from rayinfra.actors.executor import ExecutorActor
from rayinfra.config import NAMESPACE, RayinfraConfig
from rayinfra.scheduling import classes as class_logic
from rayinfra.scheduling.state import ResultsCallback, TaskResult
from rayinfra.store import StateStore

log = logging.getLogger(__name__)

RESULT_POLL_S = 10.0
IDLE_EXECUTOR_S = 60.0  # a scaled-out executor idle this long gives its resources back
NODE_VIEW_TTL_S = 2.0


@dataclass
class Executor:
    """The scheduler's view of one executor actor."""

    name: str
    handle: Any
    ready: asyncio.Future[bool]
    poller: asyncio.Task[None] | None = None
    busy_at: float = field(default_factory=time.monotonic)  # last time it had work
    node_id: str | None = None  # where Ray placed it (known once it answered its ping)


LostCallback = Callable[[str, BaseException], Awaitable[None]]


class ExecutorPools:
    """Executors per class, created lazily and scaled within what Ray reports free."""

    def __init__(
        self,
        config: RayinfraConfig,
        store: StateStore,
        on_results: ResultsCallback,
        on_lost: LostCallback,
        wake: Callable[[], None],
    ) -> None:
        self.config = config
        self.store = store
        self.on_results = on_results
        self.on_lost = on_lost
        self.wake = wake
        self.pools: dict[str, list[Executor]] = {c: [] for c in config.classes}
        self.errors: dict[str, str] = {}  # class -> why its executors cannot start
        self._envs: dict[str, dict[str, Any]] = {}  # class -> runtime_env with uploaded paths
        self._counter = int(store.kv_get("scheduler", "executor_counter", 0))
        self._config_dict = config.model_dump(mode="json")
        self._nodes: list[class_logic.NodeView] = []
        self._nodes_at = float("-inf")
        self._submits: set[asyncio.Future[Any]] = set()  # submits awaiting their replies

    async def missing(self, cls: str) -> str | None:
        """What no alive node has for the class (``None``: some node can run it); the nodes
        are read from Ray at most every ``NODE_VIEW_TTL_S``."""
        if time.monotonic() - self._nodes_at > NODE_VIEW_TTL_S:
            raw = await asyncio.to_thread(raywrap.node_views)
            self._nodes = [
                class_logic.NodeView(n["node_id"], n["resources"], n["labels"]) for n in raw
            ]
            self._nodes_at = time.monotonic()
        klass = self.config.classes[cls]
        request = class_logic.resource_request(klass)
        return class_logic.unsatisfiable_reason(cls, request, klass.node_selector, self._nodes)

    def placement(self, cls: str) -> dict[str, str | None]:
        """The class's executors and the node each runs on (``None`` until it started)."""
        return {e.name: e.node_id for e in self.pools[cls]}

    def take_error(self, cls: str) -> str | None:
        """Why the class's executors could not start (reported once), or ``None``."""
        return self.errors.pop(cls, None)

    async def ready(self, cls: str, backlog: int, inflight: int) -> list[str]:
        """Names of the class's started executors, creating (or scaling out) executors as
        needed."""
        klass = self.config.classes[cls]
        pool = self.pools[cls]
        target = max(1, klass.executors)
        if klass.slots is not None and all(e.ready.done() for e in pool):
            fits = True
            if pool:
                free = await asyncio.to_thread(raywrap.available_resources)
                fits = class_logic.can_fit(class_logic.resource_request(klass), free)
            target = class_logic.executor_target(
                klass.slots, klass.executors, klass.max_limit, len(pool), backlog, inflight, fits
            )
        while len(pool) < target:
            self._counter += 1
            self.store.kv_put("scheduler", "executor_counter", self._counter)
            options = class_logic.executor_options(cls, klass, self._counter, NAMESPACE)
            try:
                if klass.runtime_env:
                    if cls not in self._envs:
                        self._envs[cls] = await asyncio.to_thread(
                            raywrap.upload_runtime_env, klass.runtime_env
                        )
                    options["runtime_env"] = self._envs[cls]
                handle = raywrap.create_actor(
                    ExecutorActor, options, [cls, self._config_dict, klass.slots or klass.max_limit]
                )
            except Exception as e:  # noqa: BLE001 - bad class options fail that class's tasks
                self.errors[cls] = f"executor for class {cls!r} cannot be created: {e}"
                self.wake()
                return []
            ex = Executor(options["name"], handle, asyncio.get_running_loop().create_future())
            pool.append(ex)
            ex.poller = asyncio.create_task(self._poll(cls, ex))
        return [e.name for e in pool if e.ready.done() and e.ready.result()]

    def send(self, cls: str, name: str, items: list[tuple[Any, ...]]) -> None:
        """Start ``items`` on executor ``name``, without waiting for it here: calls from one
        caller reach an actor in order, and a dead executor is noticed by its result poller.
        The results of what ended during the submit (inline handlers) come with its reply."""
        ex = self._find(cls, name)
        assert ex is not None, name  # ready() named it, and nothing ran since
        ex.busy_at = time.monotonic()
        # a tuple: Ray pickles it whole, a list item by item (rayinfra.raywrap)
        call = asyncio.ensure_future(raywrap.acall(ex.handle, "submit", tuple(items)))
        self._submits.add(call)
        call.add_done_callback(partial(self._submitted, ex.name))

    def _submitted(self, name: str, call: asyncio.Future[list[TaskResult]]) -> None:
        self._submits.discard(call)
        if call.cancelled() or call.exception() is not None:
            return  # the executor is gone: its poller reports it, with its tasks
        if results := call.result():
            task = asyncio.ensure_future(self.on_results(name, results))
            self._submits.add(task)
            task.add_done_callback(self._submits.discard)

    async def cancel(self, cls: str, name: str, task_ids: list[str]) -> None:
        """Ask executor ``name`` to cancel running tasks (a lost executor ran them last)."""
        ex = self._find(cls, name)
        if ex is not None:
            with contextlib.suppress(*raywrap.actor_errors()):
                await raywrap.acall(ex.handle, "cancel", task_ids)

    def _find(self, cls: str, name: str) -> Executor | None:
        return next((e for e in self.pools[cls] if e.name == name), None)

    async def _poll(self, cls: str, ex: Executor) -> None:
        try:
            try:
                started = await raywrap.acall(
                    ex.handle, "ping", timeout_s=self.config.scheduler.executor_start_timeout_s
                )
            except asyncio.TimeoutError:
                raywrap.kill_actor(ex.handle)
                raise RuntimeError(
                    f"not started after {self.config.scheduler.executor_start_timeout_s:g}s "
                    "(scheduler.executor_start_timeout_s); check the class's runtime_env and resources"
                ) from None
            ex.node_id = started.get("node_id")
            ex.ready.set_result(True)
            self.wake()
            while True:
                results = await raywrap.acall(ex.handle, "take_results", RESULT_POLL_S)
                if results:
                    ex.busy_at = time.monotonic()
                    await self.on_results(ex.name, results)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # died, or never started (its runtime_env, its __init__)
            if not ex.ready.done():  # it never started: the class cannot run as configured
                ex.ready.set_result(False)
                self.errors[cls] = f"executor for class {cls!r} failed to start: {e}"
                log.error("executor %s failed to start: %s", ex.name, e)
            elif not isinstance(e, raywrap.actor_errors()):
                log.exception("executor %s failed", ex.name)
            else:
                log.warning("executor %s lost: %s", ex.name, e)
            if ex in self.pools[cls]:
                self.pools[cls].remove(ex)
            await self.on_lost(ex.name, e)

    def retire_idle(self, load: Callable[[str], int]) -> None:
        """Give back what scaled-out executors hold once they have been idle a while
        (``load``: how many tasks an executor runs)."""
        now = time.monotonic()
        for cls, pool in self.pools.items():
            floor = max(1, self.config.classes[cls].executors)
            for ex in list(pool):
                if len(pool) <= floor:
                    break
                if ex.ready.done() and not load(ex.name) and now - ex.busy_at > IDLE_EXECUTOR_S:
                    pool.remove(ex)
                    if ex.poller is not None:
                        ex.poller.cancel()
                    raywrap.kill_actor(ex.handle)

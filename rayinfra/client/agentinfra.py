"""``AgentInfra``: the Python client (the original's surface plus what rayinfra pins).

Every public method is written once, here, over a :class:`~rayinfra.client.transport.Transport`:
:class:`~rayinfra.client.ActorTransport` (Ray actor handles, inside the cluster) or
:class:`~rayinfra.client.GrpcTransport` (the gateway, from anywhere). ``AgentInfra(transport=...)``
takes either; without one, :func:`rayinfra.client.discovery.connect` picks it (and starts a local
runtime when none runs). ``infra.transport.kind`` says which (``"actors"`` or ``"grpc"``).

One background long-poll on the scheduler's task feed (``Transport.changes``) resolves
``wait_task`` / ``wait_tasks`` and feeds ``stream_task_results``. Calls retry transparently
across a scheduler or gateway restart for up to ``DSPY_AGENT_SERVICE_TIMEOUT`` seconds, which
is safe because task ids make submits idempotent.

``AgentInfraSync`` has the same methods without ``async`` (it runs its own event loop thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rayinfra.client.discovery import Connection, connect
from rayinfra.client.transport import Transport
from rayinfra.errors import TaskNotFoundError
from rayinfra.models import FROM_NOW, STREAM_KEYS, Progress, TaskStatus, feed_filter

if TYPE_CHECKING:
    from rayinfra.config import RayinfraConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
FEED_POLL_S = 20.0
FEED_RETRY_S = 1.0


class _Wait:
    """One :meth:`AgentInfra.wait_tasks` call: its tasks' final states as they arrive, and one
    future set when the last of them did (not a future per task gathered: a wait for 1,000
    tasks is one object, resolved by the feed or by the current-state read)."""

    __slots__ = ("done", "results", "wanted")

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.results: dict[str, dict[str, Any]] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resolve(self, task_id: str, final: dict[str, Any]) -> None:
        """``task_id`` ended as ``final`` (the first report counts)."""
        if task_id in self.results:
            return
        self.results[task_id] = final
        if len(self.results) == self.wanted and not self.done.done():
            self.done.set_result(None)

    def cancel(self) -> None:
        if not self.done.done():
            self.done.cancel()


def _each(waits: _Wait | list[_Wait] | tuple[()]) -> Iterable[_Wait]:
    """The waits of one task in :attr:`AgentInfra._waiters` (a wait, or a list of them)."""
    return waits if isinstance(waits, (list, tuple)) else (waits,)


def _known(found: Mapping[str, TaskStatus | None]) -> Iterator[tuple[str, TaskStatus]]:
    """``(id, status)`` of a transport's ``get``, decoded one at a time;
    ``TaskNotFoundError`` for an unknown id."""
    for tid, st in found.items():
        if st is None:
            raise TaskNotFoundError(tid)
        yield tid, st


class AgentInfra:
    """Async client. ``async with AgentInfra.start() as infra: ...``."""

    def __init__(
        self,
        orchestrator_addr: str | None = None,
        workspace: str | Path | None = None,
        auto_start_services: bool = True,
        cli_path: str | Path | None = None,
        *,
        state_dir: str | Path | None = None,
        config: RayinfraConfig | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._config = config
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self.orchestrator_addr = orchestrator_addr
        self.workspace = Path(workspace) if workspace is not None else Path.cwd()
        self.auto_start_services = auto_start_services
        self.cli_path = cli_path
        self._given = transport
        self._conn: Connection | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._feed_lock = asyncio.Lock()
        self._feed_seq = 0
        self._feed_reset = asyncio.Event()
        # task id -> the wait for it, or a list of them when there are more (a wait for
        # 40,000 tasks holds no list per task: see _add_wait)
        self._waiters: dict[str, _Wait | list[_Wait]] = {}
        self._streams: list[tuple[set[str] | None, asyncio.Queue[TaskStatus]]] = []

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> _StartContext:
        """``async with AgentInfra.start(...) as infra``: connect (or start a local runtime)."""
        return _StartContext(cls(*args, **kwargs))

    async def start_async(self) -> AgentInfra:
        """Connect (to the given transport, else as :func:`~rayinfra.client.discovery.connect`
        decides); start a local runtime if none runs (unless ``DSPY_AGENT_SKIP_START``). Only
        what this call started is stopped by :meth:`stop`.

        Ray wants ``ray.init`` on the main thread (it installs signal handlers there), so on the
        main thread the connect runs inline, blocking the loop for the start-up only.
        """
        if threading.current_thread() is threading.main_thread():
            self._prepare()
        else:
            await asyncio.to_thread(self._prepare)
        await self._finish_start()
        return self

    def _prepare(self) -> None:
        """Blocking part of start: pick the transport, start what is missing."""
        if self._given is not None:
            self._conn = Connection(self._given)
            return
        from rayinfra.config import load_config  # a given transport needs no config

        cfg = (
            self._config
            or load_config(
                overrides={"state.dir": str(self._state_dir)} if self._state_dir else None
            ).config
        )
        self._config = cfg
        self._conn = connect(
            cfg,
            orchestrator_addr=self.orchestrator_addr,
            workspace=self.workspace,
            cli_path=Path(self.cli_path) if self.cli_path is not None else None,
        )

    async def _finish_start(self) -> None:
        """Open the transport; on failure stop what this client started."""
        try:
            await self.transport.open()
        except BaseException:
            await self.stop()
            raise

    @property
    def transport(self) -> Transport:
        """The connection in use (``.kind``: ``"actors"`` or ``"grpc"``)."""
        if self._conn is None:
            raise RuntimeError("Infrastructure not started: call start_async() first")
        return self._conn.transport

    async def stop(self) -> None:
        """Stop the feed and close the transport; stop the runtime only if this client
        started it."""
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
            self._feed_task = None
        for waits in self._waiters.values():
            for w in _each(waits):
                w.cancel()
        self._waiters.clear()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        await conn.transport.close()
        if conn.stop_runtime is not None:
            await asyncio.to_thread(conn.stop_runtime)

    # ------------------------------------------------------------------ feed
    async def _watch(self) -> None:
        """Make the feed follow the waiters and streams just registered: started on first use
        (its cursor read before the caller reads current states, so nothing falls between)."""
        async with self._feed_lock:
            if self._feed_task is None:
                self._feed_seq, _ = await self.transport.changes(FROM_NOW, None, 0.0, False)
                self._feed_task = asyncio.create_task(self._follow_feed())
        self._feed_reset.set()

    async def _follow_feed(self) -> None:
        t = self.transport
        while True:
            if not self._waiters and not self._streams:
                # nobody is waiting: stay quiet; the durable cursor lets us catch up later
                self._feed_reset.clear()
                await self._feed_reset.wait()
                continue
            # Ask only for what someone waits for: with no stream open, finished states of the
            # waited-for tasks; a new waiter or stream re-issues the poll (see _feed_reset). A
            # large set is matched as the answer arrives, against the waiters then: a task a
            # waiter's own read resolved meanwhile is not decoded again.
            self._feed_reset.clear()
            sent, keep = (None, None) if self._streams else feed_filter(self._waiters.keys())
            poll = asyncio.ensure_future(
                t.changes(self._feed_seq, sent, FEED_POLL_S, not self._streams, keep)
            )
            reset = asyncio.ensure_future(self._feed_reset.wait())
            try:
                await asyncio.wait({poll, reset}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the feed itself is cancelled: leave no task behind
                reset.cancel()
                if not poll.done():
                    poll.cancel()
            if not poll.done() or poll.cancelled():  # reset first: the poll is being cancelled
                continue
            try:
                seq, states = poll.result()
            except Exception as e:  # noqa: BLE001 - the feed outlives any one failed poll
                log.warning("task feed poll failed (%s); retrying", e)
                await asyncio.sleep(FEED_RETRY_S)
                continue
            self._feed_seq = max(self._feed_seq, seq)
            for st in states:
                for wanted, q in self._streams:
                    if wanted is None or st.task_id in wanted:
                        q.put_nowait(st)
                if st.terminal:
                    for w in _each(self._waiters.pop(st.task_id, ())):
                        w.resolve(st.task_id, st.client_dict())  # each caller its own dict

    # ------------------------------------------------------------------ tasks
    async def submit_task(
        self,
        task_id: str | None = None,
        payload: dict[str, Any] | None = None,
        task_class: str = "cpu_short",
        priority: int = 0,
        timeout_s: float | None = None,
        workflow_id: str = "",
    ) -> dict[str, Any]:
        """Submit one task; returns ``{"success": True, "task_id", "error": ""}`` once durable."""
        spec = {
            "task_id": task_id,
            "payload": payload if payload is not None else {},
            "task_class": task_class,
            "priority": priority,
            "timeout_s": timeout_s,
            "workflow_id": workflow_id,
        }
        return (await self.submit_tasks([spec]))[0]

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit many tasks in one round trip (all or nothing); results in order."""
        if not tasks:
            return []
        return await self.transport.submit(tasks)

    async def _current(
        self, task_ids: list[str], finished_only: bool = False
    ) -> Iterator[tuple[str, TaskStatus]]:
        """Every id's status now (with ``finished_only``: of those that finished), in the order
        asked, each decoded as the caller reaches it (a caller that turns each into its result
        holds no statuses); ``TaskNotFoundError`` where it meets an unknown id."""
        return _known(await self.transport.get(task_ids, finished_only))

    async def get_task_status(self, task_id: str) -> dict[str, Any]:
        for _, st in await self._current([task_id]):
            return st.client_dict()
        raise TaskNotFoundError(task_id)  # not answered at all: as unknown

    async def wait_task(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the task is completed, failed or cancelled (``TimeoutError`` otherwise)."""
        return (await self.wait_tasks([task_id], timeout))[0]

    async def wait_tasks(
        self, task_ids: list[str], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Wait for every task to finish; their final statuses in the order asked."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return []
        w = _Wait(len(ids))
        for tid in ids:
            self._add_wait(tid, w)
        try:  # registered and watched before this read: a later finish comes by the feed
            await self._watch()
            resolved = []
            for tid, st in await self._current(ids, finished_only=True):
                w.resolve(tid, st.client_dict())
                resolved.append(tid)
            self._drop_wait(resolved, w)  # their ends need not come by the feed too
            try:
                await asyncio.wait_for(w.done, timeout)
            except asyncio.TimeoutError:
                pending = [t for t in ids if t not in w.results]
                raise TimeoutError(
                    f"{len(pending)} task(s) not finished after {timeout}s: {pending[:5]}"
                ) from None
        finally:
            # however the wait ends: the feed pops only the tasks it resolves, so a task
            # resolved by the read above (finished before: its final state went by on the feed
            # earlier, or the feed's cursor is past it) would keep this wait registered, with
            # its results, for the life of the client
            self._drop_wait(ids, w)
        return [w.results[t] for t in task_ids]

    def _add_wait(self, tid: str, w: _Wait) -> None:
        have = self._waiters.setdefault(tid, w)
        if have is not w:  # a second wait for the task
            self._waiters[tid] = [*have, w] if isinstance(have, list) else [have, w]

    def _drop_wait(self, ids: Iterable[str], w: _Wait) -> None:
        for tid in ids:
            waits = self._waiters.get(tid)
            if waits is w:
                del self._waiters[tid]
            elif isinstance(waits, list) and w in waits:
                waits.remove(w)
                if len(waits) == 1:
                    self._waiters[tid] = waits[0]

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        return await self.transport.cancel(task_id)

    async def list_tasks(
        self,
        status: str | None = None,
        task_class: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` tasks (optionally of one status and class), newest first; with
        ``after`` (the ``next`` of :meth:`list_tasks_page`) the ones after that page."""
        tasks: list[dict[str, Any]] = (
            await self.list_tasks_page(status, task_class, limit, after)
        )["tasks"]
        return tasks

    async def list_tasks_page(
        self,
        status: str | None = None,
        task_class: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        """One page of the listing: ``{"tasks": [...], "next": cursor | None}``; pass ``next``
        back as ``after`` for the page after it (``None``: this was the last). Pages are
        keyset pages: each costs the same however many tasks the store holds."""
        page = await self.transport.list_tasks(status, task_class, limit, after)
        return {"tasks": [st.client_dict() for st in page.tasks], "next": page.next}

    async def purge_tasks(self, older_than_s: float | None = None) -> dict[str, int]:
        return await self.transport.purge(older_than_s)

    async def stream_task_results(
        self, task_ids: list[str] | None = None, include_completed: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{task_id, status, result, error, duration_ms, completed_at}`` for each state change.

        With ``include_completed`` the current state of the named tasks comes first (tasks that
        already finished included). Ends when every named task has finished; unfiltered, it
        runs until the caller stops iterating. Each state is yielded once, in order.
        """
        wanted = set(task_ids) if task_ids else None
        q: asyncio.Queue[TaskStatus] = asyncio.Queue()
        entry = (wanted, q)
        self._streams.append(entry)
        remaining = set(wanted) if wanted else None
        progress = Progress()
        try:
            await self._watch()
            primed: list[TaskStatus] = []
            if wanted:  # subscribed first: a change after this read reaches the queue too
                for _, st in await self._current(sorted(wanted)):
                    if not progress.advance(st):
                        continue
                    if include_completed or not st.terminal:
                        primed.append(st)  # the current state, as it is
                    elif remaining is not None:
                        remaining.discard(st.task_id)
            while remaining is None or remaining:
                # from the feed: older than what was yielded, or a second final state: nothing
                for st in primed or progress.news(await q.get()):
                    if remaining is not None and st.terminal:
                        remaining.discard(st.task_id)
                    item = st.client_dict()
                    yield {k: item[k] for k in STREAM_KEYS}
                primed = []
        finally:
            self._streams.remove(entry)

    async def stream_events(
        self, event_types: list[str] | None = None, since_timestamp: int = 0, after_seq: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{event_type, resource_id, data, timestamp, seq}``: the past after
        ``after_seq`` (the ``seq`` of the last event a caller kept: a resume, each event once),
        else from ``since_timestamp`` (inclusive), first, then live events, until the caller
        stops iterating. It goes on across a restart of the gateway or the whole runtime."""
        async for ev in self.transport.events(event_types, since_timestamp, after_seq):
            yield ev

    # ------------------------------------------------------------------ workflows
    async def create_workflow(
        self, spec: dict[str, Any], workflow_id: str | None = None
    ) -> dict[str, Any]:
        """Validate and store a workflow (``docs/workflows.md``); the saved workflow, its
        ``id`` generated when neither ``workflow_id`` nor the spec gives one. Saving an
        existing id makes a new version. ``InvalidArgumentError`` names the path of what is
        wrong (``nodes[2].task.class``, ``edges``: a cycle)."""
        return await self.transport.create_workflow(spec, workflow_id or spec.get("id") or "")

    async def start_workflow_run(
        self,
        workflow_id: str,
        input: dict[str, Any] | None = None,
        idempotency_key: str = "",
    ) -> dict[str, Any]:
        """Start a run of ``workflow_id`` with ``input`` (``${input.x}`` in its steps); its
        record (``reused`` True when ``idempotency_key`` named a run started before)."""
        return await self.transport.start_workflow_run(workflow_id, idempotency_key, input or {})

    async def get_workflow_run(self, run_id: str) -> dict[str, Any]:
        """A run's record: ``{id, workflow_id, status, steps: [{node_id, status, attempts,
        result, error, ...}], input, created_at, completed_at?, error?}``."""
        return await self.transport.get_workflow_run(run_id)

    async def list_workflows(self) -> list[dict[str, Any]]:
        """Every workflow, newest first (without nodes and edges: ``node_count``,
        ``edge_count``)."""
        return await self.transport.list_workflows()

    async def list_workflow_runs(self, workflow_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The runs of ``workflow_id``, newest first."""
        return await self.transport.list_workflow_runs(workflow_id, limit)

    async def stream_workflow_status(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{run_id, status, current_step, steps_completed, total_steps, output,
        error}`` now and at every change, until the run has finished."""
        async for p in self.transport.workflow_status(run_id):
            yield p

    async def cancel_workflow_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a run: its running steps' tasks are cancelled, the rest never start."""
        return await self.transport.cancel_workflow_run(run_id)

    # ------------------------------------------------------------------ health, metrics
    async def get_metrics(self) -> dict[str, float]:
        return await self.transport.metrics()

    async def runtime_status(self, services: list[str] | None = None) -> dict[str, Any]:
        """The runtime at a glance, as ``rayinfra status --json`` prints it (nodes, control
        actors, task classes with their queues, the gateway's servers, services)."""
        return await self.transport.runtime_status(services or [])

    async def health_check(self) -> dict[str, Any]:
        """``{healthy, version, services}``; never raises (an unreachable runtime is unhealthy)."""
        from rayinfra._version import __version__

        if self._conn is None:
            return {
                "healthy": False,
                "error": "Not connected",
                "version": __version__,
                "services": {},
            }
        try:
            return await self._conn.transport.health()
        except Exception as e:  # noqa: BLE001 - reported, as the original client did
            return {"healthy": False, "error": str(e), "version": __version__, "services": {}}


class _StartContext:
    def __init__(self, infra: AgentInfra) -> None:
        self.infra = infra

    async def __aenter__(self) -> AgentInfra:
        return await self.infra.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await self.infra.stop()

    def __await__(self) -> Any:  # `infra = await AgentInfra.start()` also works
        return self.infra.start_async().__await__()


class AgentInfraSync:
    """``AgentInfra`` without ``async``: every method runs on a private event loop thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="agentinfra", daemon=True
        )
        self._thread.start()
        self._infra = AgentInfra(*args, **kwargs)

    def _run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(_await(coro), self._loop).result()

    def start(self) -> AgentInfraSync:
        self._infra._prepare()  # in the caller's thread: ray.init wants the main thread
        self._run(self._infra._finish_start())
        return self

    def stop(self) -> None:
        try:
            self._run(self._infra.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> AgentInfraSync:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _iterate(self, agen: AsyncIterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(agen, "aclose", None)
            if aclose is not None:
                self._run(aclose())

    def submit_task(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._infra.submit_task(*args, **kwargs))

    def submit_tasks(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._run(self._infra.submit_tasks(tasks))

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        return self._run(self._infra.get_task_status(task_id))

    def wait_task(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._infra.wait_task(task_id, timeout))

    def wait_tasks(self, task_ids: list[str], timeout: float | None = None) -> list[dict[str, Any]]:
        return self._run(self._infra.wait_tasks(task_ids, timeout))

    def cancel_task(self, task_id: str) -> dict[str, Any]:
        return self._run(self._infra.cancel_task(task_id))

    def list_tasks(
        self,
        status: str | None = None,
        task_class: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._run(self._infra.list_tasks(status, task_class, limit, after))

    def list_tasks_page(
        self,
        status: str | None = None,
        task_class: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        return self._run(self._infra.list_tasks_page(status, task_class, limit, after))

    def purge_tasks(self, older_than_s: float | None = None) -> dict[str, int]:
        return self._run(self._infra.purge_tasks(older_than_s))

    def stream_task_results(
        self, task_ids: list[str] | None = None, include_completed: bool = True
    ) -> Iterator[dict[str, Any]]:
        return self._iterate(self._infra.stream_task_results(task_ids, include_completed))

    def stream_events(
        self, event_types: list[str] | None = None, since_timestamp: int = 0, after_seq: int = 0
    ) -> Iterator[dict[str, Any]]:
        return self._iterate(self._infra.stream_events(event_types, since_timestamp, after_seq))

    def create_workflow(
        self, spec: dict[str, Any], workflow_id: str | None = None
    ) -> dict[str, Any]:
        return self._run(self._infra.create_workflow(spec, workflow_id))

    def start_workflow_run(
        self,
        workflow_id: str,
        input: dict[str, Any] | None = None,
        idempotency_key: str = "",
    ) -> dict[str, Any]:
        return self._run(self._infra.start_workflow_run(workflow_id, input, idempotency_key))

    def get_workflow_run(self, run_id: str) -> dict[str, Any]:
        return self._run(self._infra.get_workflow_run(run_id))

    def list_workflows(self) -> list[dict[str, Any]]:
        return self._run(self._infra.list_workflows())

    def list_workflow_runs(self, workflow_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._run(self._infra.list_workflow_runs(workflow_id, limit))

    def stream_workflow_status(self, run_id: str) -> Iterator[dict[str, Any]]:
        return self._iterate(self._infra.stream_workflow_status(run_id))

    def cancel_workflow_run(self, run_id: str) -> dict[str, Any]:
        return self._run(self._infra.cancel_workflow_run(run_id))

    def get_metrics(self) -> dict[str, float]:
        return self._run(self._infra.get_metrics())

    def runtime_status(self, services: list[str] | None = None) -> dict[str, Any]:
        return self._run(self._infra.runtime_status(services))

    def health_check(self) -> dict[str, Any]:
        return self._run(self._infra.health_check())


async def _await(aw: Awaitable[T]) -> T:
    return await aw

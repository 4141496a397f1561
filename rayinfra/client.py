"""``AgentInfra``: the Python client (the original's surface plus what rayinfra pins).

Over actor handles it talks to the ``scheduler`` actor directly. One background long-poll on the
scheduler's change feed resolves ``wait_task`` / ``wait_tasks`` and feeds ``stream_task_results``;
every call retries transparently across a scheduler restart (actor died or unavailable) for up to
``DSPY_AGENT_SERVICE_TIMEOUT`` seconds, which is safe because task ids make submits idempotent.

Over gRPC (``orchestrator_addr=``, or a gateway answering at ``ORCHESTRATOR_GRPC_ADDR`` when no
runtime is recorded in the state dir) the same methods go through the gateway
(:mod:`rayinfra.grpc_client`); ``infra.transport`` says which (``"actors"`` or ``"grpc"``). On the
head's host, submits are admitted in this process (see :class:`_LocalAdmission`).

``AgentInfraSync`` has the same methods without ``async`` (it runs its own event loop thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from rayinfra import detached, raywrap, runtime, taskstore
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from rayinfra.errors import TaskNotFound, Unavailable
from rayinfra.scheduling.tasks import TERMINAL_STATES, InvalidArgument, encode_wire_result

if TYPE_CHECKING:
    from rayinfra.grpc_client import GrpcTasks

T = TypeVar("T")
FEED_POLL_S = 20.0
FEED_FILTER_MAX = 256  # waited-for ids sent with each feed poll; more: poll unfiltered
DETACHED_START_TIMEOUT_S = 180.0
FUTURE_SEQ = 2**62  # "from the future": the feed answers with its latest seq
_RANK = {"pending": 0, "running": 1}  # terminal states rank 2: a task's states only move forward


def _remote_errors() -> tuple[type[BaseException], ...]:
    return raywrap.actor_errors()


def _unwrap(e: BaseException) -> BaseException:
    """Ray wraps an actor method's exception; give the caller the original when it is ours."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, (InvalidArgument, KeyError, RuntimeError)) and not isinstance(
        cause, _remote_errors()
    ):
        return cause
    return e


class _ActorTransport:
    """Calls the control actors through Ray handles, retrying across actor restarts."""

    def __init__(self, retry_for_s: float, backoff_s: float) -> None:
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self.handles: dict[str, Any] = {}

    def _handle(self, actor: str) -> Any:
        h = self.handles.get(actor)
        if h is None:
            h = raywrap.get_actor(actor)
            if h is None:
                raise runtime.RuntimeFailure(
                    f"the {actor} actor does not exist: is rayinfra running?"
                )
            self.handles[actor] = h
        return h

    async def call(self, actor: str, method: str, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.05
        while True:
            try:
                return await getattr(self._handle(actor), method).remote(*args, **kwargs)
            except _remote_errors() as e:
                if time.monotonic() + delay > deadline:
                    raise runtime.RuntimeFailure(
                        f"{actor} unavailable for {self.retry_for_s:g}s: {type(e).__name__}"
                    ) from e
                self.handles.pop(actor, None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_s)
            except Exception as e:  # noqa: BLE001 - re-raised, unwrapped from Ray's wrapper
                raise _unwrap(e) from None


def _client_status(st: dict[str, Any]) -> dict[str, Any]:
    """The pinned status shape: ``result`` is the wire string map, ``result_payload`` native JSON."""
    native = st.get("result")
    started, finished = st.get("started_at"), st.get("finished_at")
    return {
        "task_id": st["task_id"],
        "status": st["status"],
        "result": encode_wire_result(native) if native is not None else {},
        "result_payload": native,
        "error": st.get("error", "") or "",
        "attempts": st.get("attempts", 0),
        "duration_ms": (finished - started) * 1000.0 if started and finished else 0.0,
        "completed_at": int(finished) if finished else 0,
    }


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
    ) -> None:
        self._config = config
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self.orchestrator_addr = orchestrator_addr
        self.workspace = Path(workspace) if workspace is not None else Path.cwd()
        self.auto_start_services = auto_start_services
        self.cli_path = cli_path
        self._transport: _ActorTransport | None = None
        self._grpc: GrpcTasks | None = None
        self._grpc_addr: str | None = None
        self._local: _LocalAdmission | None = None
        self._started_runtime = False
        self._feed_task: asyncio.Task[None] | None = None
        self._feed_seq = 0
        self._feed_ready: asyncio.Event | None = None
        self._feed_reset = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._streams: list[tuple[set[str] | None, asyncio.Queue[dict[str, Any]]]] = []

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> _StartContext:
        """``async with AgentInfra.start(...) as infra``: connect (or start a local runtime)."""
        return _StartContext(cls(*args, **kwargs))

    async def start_async(self) -> AgentInfra:
        """Connect to the runtime of the state dir; start a local one if none runs (unless
        ``DSPY_AGENT_SKIP_START``). Only what this call started is stopped by :meth:`stop`.

        Ray wants ``ray.init`` on the main thread (it installs signal handlers there), so on the
        main thread the connect runs inline, blocking the loop for the start-up only.
        """
        if threading.current_thread() is threading.main_thread():
            self._prepare()
        else:
            await asyncio.to_thread(self._prepare)
        await self._finish_start()
        return self

    async def _finish_start(self) -> None:
        """Connect the transport; on failure stop what this client started (no leaked runtime)."""
        try:
            await self._start_feed()
        except BaseException:
            await self.stop()
            raise

    @property
    def transport(self) -> str:
        """``"grpc"`` through a gateway, ``"actors"`` through Ray actor handles."""
        return "grpc" if self._grpc_addr is not None else "actors"

    def _prepare(self) -> None:
        """Blocking part of start: resolve config, pick the transport, start what is missing."""
        cfg = (
            self._config
            or load_config(
                overrides={"state.dir": str(self._state_dir)} if self._state_dir else None
            ).config
        )
        self._config = cfg
        recorded = runtime.recorded(cfg.state.dir) is not None
        # An explicit address means gRPC. Otherwise the runtime of this state dir, by actor
        # handles; with none recorded here, a gateway answering at the configured address
        # (ORCHESTRATOR_GRPC_ADDR: another user's or another host's runtime) over gRPC; with
        # neither, a local runtime is started.
        addr = self.orchestrator_addr
        if addr is None and not recorded:
            dial = cfg.orchestrator_dial_addr
            if _listening(dial, cfg.client.connect_timeout_s):
                addr = dial
        if addr is not None:
            self._prepare_grpc(cfg, addr)
            return
        if not recorded:
            if cfg.client.skip_start:
                raise runtime.RuntimeFailure(
                    f"rayinfra is not running (state dir {cfg.state.dir}) and DSPY_AGENT_SKIP_START is set"
                )
            runtime.start(cfg)
            self._started_runtime = True
        info = runtime.connect(cfg.state.dir)
        self._transport = _ActorTransport(
            cfg.client.service_timeout_s, cfg.client.reconnect_backoff_s
        )
        if info.mode == "local":  # the head, and so the state store, is on this host
            self._local = _LocalAdmission.open(cfg.state.dir)

    def _prepare_grpc(self, cfg: RayinfraConfig, addr: str) -> None:
        """Nothing listening at ``addr``: start the local runtime if it would serve there."""
        self._grpc_addr = addr
        if _listening(addr, cfg.client.connect_timeout_s):
            return
        local = dial_addr(cfg.gateway.orchestrator_grpc_addr)
        if cfg.client.skip_start:
            raise runtime.RuntimeFailure(
                f"no gateway answered at {addr} within {cfg.client.connect_timeout_s:g}s and "
                "DSPY_AGENT_SKIP_START is set"
            )
        if addr != local:
            raise runtime.RuntimeFailure(
                f"no gateway answered at {addr} within {cfg.client.connect_timeout_s:g}s (a "
                f"runtime started here would serve {local}, so none was started)"
            )
        # in a child process: a gRPC client never joins the Ray cluster itself
        try:
            detached.run(
                "start",
                cfg,
                timeout_s=max(cfg.client.service_timeout_s, DETACHED_START_TIMEOUT_S),
                workspace=self.workspace,
                cli_path=self._cli_path(cfg),
            )
        except detached.DetachedFailure as e:
            raise runtime.RuntimeFailure(str(e)) from None
        self._started_runtime = True

    def _cli_path(self, cfg: RayinfraConfig) -> Path | None:
        return Path(self.cli_path) if self.cli_path is not None else cfg.client.cli_path

    async def _connect_grpc(self) -> None:
        from rayinfra.grpc_client import GrpcTasks

        cfg, addr = self._config, self._grpc_addr
        assert cfg is not None and addr is not None
        token = cfg.gateway.auth_token or _read_token(cfg.gateway_token_path)
        ca_file = cfg.client.tls_ca_file or cfg.gateway.tls_cert_file
        try:
            tls_ca = ca_file.read_bytes() if ca_file is not None else None
        except OSError as e:
            raise runtime.RuntimeFailure(f"cannot read the TLS CA file {ca_file}: {e}") from None
        self._grpc = GrpcTasks(
            addr,
            token=token,
            connect_timeout_s=cfg.client.connect_timeout_s,
            retry_for_s=cfg.client.service_timeout_s,
            backoff_s=cfg.client.reconnect_backoff_s,
            tls_ca=tls_ca,
        )
        try:
            # a runtime started just now may still be binding its servers
            await self._grpc.connect(
                cfg.client.service_timeout_s if self._started_runtime else None
            )
            await self._wait_until_serving(cfg.client.service_timeout_s)
        except BaseException:
            await self._grpc.close()
            self._grpc = None
            raise

    async def _wait_until_serving(self, timeout_s: float) -> None:
        """Until the gateway's Health says the task path (scheduler, gateway) is up; services
        still starting do not hold the client back (their state is in ``health_check()``)."""
        assert self._grpc is not None and self._config is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                h = await self._grpc.health()
                if all(h["services"].get(a) == "healthy" for a in ("scheduler", "gateway")):
                    return
                why = f"not ready: {h['services']}"
            except Unavailable as e:
                why = str(e)
            if time.monotonic() >= deadline:
                raise runtime.RuntimeFailure(
                    f"the gateway at {self._grpc_addr} did not become ready in {timeout_s:g}s ({why})"
                )
            await asyncio.sleep(min(self._config.client.reconnect_backoff_s, 0.5))

    async def _start_feed(self) -> None:
        if self._grpc_addr is not None:
            await self._connect_grpc()  # waits and streams ride StreamTaskResults: no feed here
            return
        self._feed_ready = asyncio.Event()
        self._feed_task = asyncio.create_task(self._follow_feed())
        await self._feed_ready.wait()

    async def stop(self) -> None:
        """Stop the feed; stop the runtime only if this client started it."""
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
            self._feed_task = None
        for futs in self._waiters.values():
            for f in futs:
                if not f.done():
                    f.cancel()
        self._waiters.clear()
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None
        if self._local is not None:
            self._local.close()
            self._local = None
        if self._started_runtime and self._config is not None:
            if self._grpc_addr is not None:
                cfg = self._config
                await asyncio.to_thread(
                    detached.run,
                    "stop",
                    cfg,
                    timeout_s=DETACHED_START_TIMEOUT_S,
                    cli_path=self._cli_path(cfg),
                )
            else:
                await asyncio.to_thread(runtime.stop, self._config.state.dir, force=True)
            self._started_runtime = False
        self._transport = None

    def _t(self) -> _ActorTransport:
        if self._transport is None:
            raise RuntimeError("Infrastructure not started: call start_async() first")
        return self._transport

    def _g(self) -> GrpcTasks | None:
        """The gRPC transport when that is the one in use (``None``: actor handles)."""
        if self._grpc_addr is None:
            return None
        if self._grpc is None:
            raise RuntimeError("Infrastructure not started: call start_async() first")
        return self._grpc

    # ------------------------------------------------------------------ feed
    async def _follow_feed(self) -> None:
        assert self._feed_ready is not None
        t = self._t()
        seq, _ = await t.call("scheduler", "changes", FUTURE_SEQ, None, 0.0)
        self._feed_seq = seq
        self._feed_ready.set()
        while True:
            if not self._waiters and not self._streams:
                # nobody is waiting: stay quiet; the durable cursor lets us catch up later
                self._feed_reset.clear()
                await self._feed_reset.wait()
                continue
            # Ask only for what someone waits for: with no stream open, finished states of the
            # waited-for tasks; a new waiter or stream re-issues the poll (see _feed_reset).
            self._feed_reset.clear()
            # (a large id set is cheaper filtered here than sent, and matched, on every poll)
            ids = (
                None
                if self._streams or len(self._waiters) > FEED_FILTER_MAX
                else list(self._waiters)
            )
            poll = asyncio.ensure_future(
                t.call("scheduler", "changes", self._feed_seq, ids, FEED_POLL_S, not self._streams)
            )
            reset = asyncio.ensure_future(self._feed_reset.wait())
            await asyncio.wait({poll, reset}, return_when=asyncio.FIRST_COMPLETED)
            reset.cancel()
            if not poll.done():
                poll.cancel()
                continue
            try:
                seq, changes = poll.result()
            except runtime.RuntimeFailure:
                await asyncio.sleep(1.0)
                continue
            self._feed_seq = max(self._feed_seq, seq)
            for ch in changes:
                if ch["kind"] != "state":
                    continue
                status = _client_status(taskstore.status_from_change(ch["key"], ch["data"]))
                for tid_filter, q in self._streams:
                    if tid_filter is None or ch["key"] in tid_filter:
                        q.put_nowait(status)
                if status["status"] in TERMINAL_STATES:
                    for fut in self._waiters.pop(ch["key"], []):
                        if not fut.done():
                            fut.set_result(status)

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
        if g := self._g():
            return await g.submit_tasks(tasks)
        t = self._t()
        if self._local is not None:
            return await self._local.submit(tasks, t)
        res = await t.call("scheduler", "submit", list(tasks))
        return [
            {"success": r["success"], "task_id": r["task_id"], "error": r["error"]} for r in res
        ]

    async def get_task_status(self, task_id: str) -> dict[str, Any]:
        if g := self._g():
            got = (await g.get([task_id]))[task_id]
            if got is None:
                raise TaskNotFound(task_id)
            return got
        st = (await self._t().call("scheduler", "get", [task_id]))[task_id]
        if st is None:
            raise TaskNotFound(task_id)
        return _client_status(st)

    async def wait_task(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the task is completed, failed or cancelled (``TimeoutError`` otherwise)."""
        return (await self.wait_tasks([task_id], timeout))[0]

    async def wait_tasks(
        self, task_ids: list[str], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        if g := self._g():
            try:
                final = await asyncio.wait_for(g.wait(task_ids), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"tasks not finished after {timeout}s: {task_ids[:5]}") from None
            return [final[t] for t in task_ids]
        loop = asyncio.get_running_loop()
        futs: dict[str, asyncio.Future[dict[str, Any]]] = {}
        for tid in task_ids:
            if tid not in futs:
                futs[tid] = loop.create_future()
                self._waiters.setdefault(tid, []).append(futs[tid])
        self._feed_reset.set()  # the feed now has to watch these ids too
        current = await self._t().call("scheduler", "get", list(futs))
        for tid, st in current.items():
            if st is None:
                self._drop_waiters(futs)
                raise TaskNotFound(tid)
            if st["status"] in TERMINAL_STATES and not futs[tid].done():
                futs[tid].set_result(_client_status(st))
        try:
            done = await asyncio.wait_for(asyncio.gather(*futs.values()), timeout)
        except asyncio.TimeoutError:
            pending = [t for t, f in futs.items() if f.cancelled() or not f.done()]
            self._drop_waiters(futs)
            raise TimeoutError(
                f"{len(pending)} task(s) not finished after {timeout}s: {pending[:5]}"
            ) from None
        by_id = dict(zip(futs, done, strict=True))
        return [by_id[t] for t in task_ids]

    def _drop_waiters(self, futs: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        for tid, f in futs.items():
            lst = self._waiters.get(tid, [])
            if f in lst:
                lst.remove(f)
            if not lst:
                self._waiters.pop(tid, None)

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        if g := self._g():
            return await g.cancel(task_id)
        try:
            return dict(await self._t().call("scheduler", "cancel", task_id))
        except KeyError:
            raise TaskNotFound(task_id) from None

    async def list_tasks(
        self, status: str | None = None, task_class: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if g := self._g():
            return await g.list_tasks(status, task_class, limit)
        return [
            _client_status(s)
            for s in await self._t().call("scheduler", "list_tasks", status, task_class, limit)
        ]

    async def purge_tasks(self, older_than_s: float | None = None) -> dict[str, int]:
        if g := self._g():
            return await g.purge(older_than_s)
        return dict(await self._t().call("scheduler", "purge", older_than_s))

    async def stream_task_results(
        self, task_ids: list[str] | None = None, include_completed: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{task_id, status, result, error, duration_ms, completed_at}`` for each state change.

        With ``include_completed`` the current state of the named tasks comes first (tasks that
        already finished included). Ends when every named task has finished; unfiltered, it
        runs until the caller stops iterating.
        """
        if g := self._g():
            async for item in self._stream_grpc(g, task_ids, include_completed):
                yield item
            return
        wanted = set(task_ids) if task_ids else None
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        entry = (wanted, q)
        self._streams.append(entry)
        self._feed_reset.set()
        remaining = set(wanted) if wanted else None
        try:
            if wanted and include_completed:
                current = await self._t().call("scheduler", "get", sorted(wanted))
                for tid, st in current.items():
                    if st is None:
                        raise TaskNotFound(tid)
                    q.put_nowait(_client_status(st))
            seen: dict[str, int] = {}  # task id -> rank of the last state yielded
            while remaining is None or remaining:
                item = await q.get()
                rank = _RANK.get(item["status"], 2)
                if rank < seen.get(item["task_id"], -1) or (
                    rank == 2 and item["task_id"] in seen and seen[item["task_id"]] == 2
                ):
                    continue  # a snapshot older than what the feed already delivered
                seen[item["task_id"]] = rank
                if remaining is not None and rank == 2:
                    remaining.discard(item["task_id"])
                yield {
                    k: item[k]
                    for k in ("task_id", "status", "result", "error", "duration_ms", "completed_at")
                }
        finally:
            self._streams.remove(entry)

    async def stream_events(
        self, event_types: list[str] | None = None, since_timestamp: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{event_type, resource_id, data, timestamp}``: the past from ``since_timestamp``
        (inclusive) first, then live events, until the caller stops iterating."""
        if g := self._g():
            async for ev in g.events(event_types, since_timestamp):
                yield ev
            return
        t = self._t()
        seq, events = await t.call(
            "scheduler", "events", 0, since_timestamp or None, event_types, 1000
        )
        while True:
            for e in events:
                yield {k: e[k] for k in ("event_type", "resource_id", "data", "timestamp")}
            seq, events = await t.call(
                "scheduler", "events", seq, None, event_types, 1000, FEED_POLL_S
            )

    # ------------------------------------------------------------------ health, metrics
    async def _stream_grpc(
        self, g: GrpcTasks, task_ids: list[str] | None, include_completed: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """``stream_task_results`` over gRPC: same dedupe and end as over actors."""
        remaining = set(task_ids) if task_ids else None
        if remaining:
            current = await g.get(sorted(remaining))
            for tid, st in current.items():
                if st is None:
                    raise TaskNotFound(tid)
        seen: dict[str, int] = {}
        stream = g.results(task_ids, include_completed)
        try:
            async for item in stream:
                rank = _RANK.get(item["status"], 2)
                if rank < seen.get(item["task_id"], -1) or (
                    rank == 2 and seen.get(item["task_id"]) == 2
                ):
                    continue
                seen[item["task_id"]] = rank
                yield {
                    k: item[k]
                    for k in ("task_id", "status", "result", "error", "duration_ms", "completed_at")
                }
                if remaining is not None and rank == 2:
                    remaining.discard(item["task_id"])
                    if not remaining:
                        return
        finally:
            await stream.aclose()

    async def get_metrics(self) -> dict[str, float]:
        if g := self._g():
            return await g.metrics()
        return dict(await self._t().call("scheduler", "metrics_snapshot"))

    async def health_check(self) -> dict[str, Any]:
        from rayinfra import __version__
        from rayinfra.actors import CONTROL_ACTORS

        if self._grpc is not None:
            try:
                return await self._grpc.health()
            except Exception as e:  # noqa: BLE001 - reported, as the original client did
                return {"healthy": False, "error": str(e), "version": __version__, "services": {}}
        if self._transport is None:
            return {
                "healthy": False,
                "error": "Not connected",
                "version": __version__,
                "services": {},
            }
        services: dict[str, str] = {}
        for name in CONTROL_ACTORS:
            try:
                await asyncio.wait_for(self._transport.call(name, "ping"), 5.0)
                services[name] = "healthy"
            except (runtime.RuntimeFailure, asyncio.TimeoutError) as e:
                services[name] = f"unhealthy: {e}"
        return {
            "healthy": all(v == "healthy" for v in services.values()),
            "version": __version__,
            "services": services,
        }


class _LocalAdmission:
    """Submits from a client on the head's host: admitted here (validated against the runtime's
    own effective config, committed to its state store) and announced on the scheduler's
    doorbell, the way the gateway does (:mod:`rayinfra.admission`). The acknowledgement then
    costs one local SQLite transaction instead of an actor round trip, and does not wait for a
    restarting scheduler. Without a doorbell receiver the scheduler is told by an ``adopt``
    call, and its periodic catch-up queues anything both missed."""

    def __init__(self, store: Any, config: RayinfraConfig, bell: Any) -> None:
        self.store = store
        self.config = config
        self.bell = bell
        self._pending: set[asyncio.Task[Any]] = set()

    @classmethod
    def open(cls, state_dir: Path) -> _LocalAdmission | None:
        from rayinfra import doorbell
        from rayinfra.config import ConfigError, load_effective
        from rayinfra.store import StateStore, StoreError

        try:
            config = load_effective(state_dir)  # the classes and limits the runtime runs with
            store = StateStore(
                config.state.db_path,
                synchronous=config.state.synchronous,
                group_commit_max=config.state.group_commit_max,
            )
        except (ConfigError, StoreError, OSError, sqlite3.Error):
            return None  # not readable here (another user's runtime): submits go to the actor
        return cls(
            store, config, doorbell.Bell(doorbell.address(config.state.db_path, "scheduler"))
        )

    async def submit(
        self, tasks: list[dict[str, Any]], transport: _ActorTransport
    ) -> list[dict[str, Any]]:
        from rayinfra import admission

        admitted = await admission.admit(
            self.store, self.config, tasks, trusted=True, source="client"
        )
        if admitted.new_ids and not self.bell.ring():
            call = transport.call("scheduler", "adopt", sorted(admitted.new_ids), admitted.seq)
            task = asyncio.ensure_future(call)  # committed already: not awaited by the caller
            self._pending.add(task)
            task.add_done_callback(self._done)
        return [
            {"success": r["success"], "task_id": r["task_id"], "error": r["error"]}
            for r in admitted.replies()
        ]

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved; a failed call is fine: the scheduler's catch-up queues them

    def close(self) -> None:
        for task in self._pending:
            task.cancel()
        self.bell.close()
        self.store.close()


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        self, status: str | None = None, task_class: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return self._run(self._infra.list_tasks(status, task_class, limit))

    def purge_tasks(self, older_than_s: float | None = None) -> dict[str, int]:
        return self._run(self._infra.purge_tasks(older_than_s))

    def stream_task_results(
        self, task_ids: list[str] | None = None, include_completed: bool = True
    ) -> Iterator[dict[str, Any]]:
        return self._iterate(self._infra.stream_task_results(task_ids, include_completed))

    def stream_events(
        self, event_types: list[str] | None = None, since_timestamp: int = 0
    ) -> Iterator[dict[str, Any]]:
        return self._iterate(self._infra.stream_events(event_types, since_timestamp))

    def get_metrics(self) -> dict[str, float]:
        return self._run(self._infra.get_metrics())

    def health_check(self) -> dict[str, Any]:
        return self._run(self._infra.health_check())


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def _listening(addr: str, timeout_s: float) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    import socket

    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None

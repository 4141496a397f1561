"""``env_manager.v1.EnvManagerService``: the service registry and health checker over gRPC,
plus ExecuteTask and GetResourceAvailability through the scheduler, and the logs of the runtime's
own actors (StreamLogs of ``scheduler``, ``gateway``, ``executor-<class>-<n>``, ...). Every RPC
does real work."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from rayinfra.api import stubs
from rayinfra.api.auth import Auth
from rayinfra.api.fanout import Fanout
from rayinfra.api.grpc_common import abort_for, aborting, decode_payload, is_trusted, string_map
from rayinfra.config import CLASS_ALIASES, CONTROL_ACTOR_NAMES, GatewaySection
from rayinfra.control import ControlPlane
from rayinfra.errors import InvalidArgumentError, NotTrustedError
from rayinfra.hardware import HardwareInfo
from rayinfra.models import FROM_NOW, TaskStatus

FEED_POLL_S = 10.0
OP_POLL_S = 10.0
LOG_READ_S = 5.0
EXECUTE_DEFAULT_TIMEOUT_S = 300.0
EXECUTOR_PREFIX = "executor-"

T = TypeVar("T")
#: ``(actor name, tail (-1 = all), follow) -> lines`` of a runtime actor's log; blocking;
#: LookupError for an unknown actor
ActorLog = Callable[[str, int, bool], Iterator[str]]


def is_runtime_actor(name: str) -> bool:
    """Whether StreamLogs reads ``name`` from Ray's session logs: a control actor or an
    executor (they win over a service of the same name, as ``rayinfra logs`` always did)."""
    return name in CONTROL_ACTOR_NAMES or name.startswith(EXECUTOR_PREFIX)


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
    """The items of a blocking iterator, made and read by a thread of its own. When the
    consumer stops early, the thread stops at its next item (it may block until then)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(done: bool, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is reading
            loop.call_soon_threadsafe(queue.put_nowait, (done, item))

    def pump() -> None:
        it: Iterator[T] = iter(())
        try:
            it = make()
            for item in it:
                if stop.is_set():
                    return
                put(False, item)
            put(True, None)
        except Exception as e:  # noqa: BLE001 - re-raised by the consumer
            put(True, e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    threading.Thread(target=pump, daemon=True, name="iterate-in-thread").start()
    try:
        while True:
            done, item = await queue.get()
            if done:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def health_feed(control: ControlPlane) -> Fanout:
    async def poll(after: int) -> tuple[int, list[Any]]:
        seq, items = await control.call(
            "service_registry", "health_updates", after, None, FEED_POLL_S
        )
        return seq, items

    async def start() -> int:
        seq, _ = await control.call("service_registry", "health_updates", FROM_NOW, None, 0.0)
        return int(seq)

    return Fanout(poll, start)


class EnvManagerServicer:
    """Registered with ``add_EnvManagerServiceServicer_to_server``."""

    def __init__(
        self,
        control: ControlPlane,
        auth: Auth,
        health: Fanout,
        hardware: Callable[[], HardwareInfo],
        class_names: list[str],
        actor_log: ActorLog,
        settings: GatewaySection | None = None,
    ) -> None:
        self.settings = settings or GatewaySection()
        self.control = control
        self.auth = auth
        self.health = health
        self.hardware = hardware
        self.class_names = class_names
        self.actor_log = actor_log
        self.pb2, _ = stubs.env_manager()

    async def _op_stream(
        self, op_id: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dict[str, Any]]:
        seq, done = 0, False
        while not done:
            async with aborting(context):
                seq, updates, done = await self.control.call(
                    "service_registry", "op_updates", op_id, seq, OP_POLL_S
                )
            for u in updates:
                yield u

    # ------------------------------------------------------------------ services
    async def StartServices(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async with aborting(context):
            if request.overrides and not is_trusted(self.auth, context):
                # an override can set a service's argv, image or volumes: it runs code
                raise NotTrustedError("overrides", "can change what a service runs")
            op_id = await self.control.call(
                "service_registry",
                "start",
                list(request.service_names),
                request.parallel,
                dict(request.overrides),
            )
        async for u in self._op_stream(op_id, context):
            required = False
            if u["progress"] >= 100:  # the service's final update: is it required?
                async with aborting(context):
                    row = await self.control.call("service_registry", "status", [u["service_name"]])
                required = bool(row[u["service_name"]].get("required"))
            yield self.pb2.ServiceStatusUpdate(
                service_name=u["service_name"],
                status=u["status"],
                message=u["message"],
                progress=int(u["progress"]),
                required=required,
            )

    async def StopServices(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._stop(context, "stop", list(request.service_names), _timeout(request))

    async def PruneServices(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Stop, remove and forget the orphaned services (the registry's ``prune``)."""
        return await self._stop(context, "prune", _timeout(request))

    async def _stop(self, context: grpc.aio.ServicerContext, method: str, *args: Any) -> Any:
        async with aborting(context):
            results: dict[str, str] = await self.control.call("service_registry", method, *args)
        ok = all(r in ("stopped", "not running") for r in results.values())
        return self.pb2.StopServicesResponse(success=ok, service_results=results)

    async def RestartService(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if not request.service_name:
                raise InvalidArgumentError("service_name", "is required")
            ok, message = await self.control.call(
                "service_registry",
                "restart",
                request.service_name,
                _timeout(request),
            )
        return self.pb2.RestartServiceResponse(success=ok, message=message)

    async def GetServicesStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            rows: dict[str, dict[str, Any]] = await self.control.call(
                "service_registry", "status", list(request.service_names)
            )
        out = {}
        for name, row in rows.items():
            health = row.get("health") or {}
            probe = health.get("probe") or {}
            checks = {}
            if probe:
                checks = string_map(
                    {
                        "kind": probe.get("kind", ""),
                        "healthy": probe.get("healthy", False),
                        "message": probe.get("message", ""),
                        "latency_ms": round(float(probe.get("latency_s", 0.0)) * 1000, 2),
                        "status": health.get("status", ""),
                    }
                )
            usage = health.get("resource_usage") or {}
            out[name] = self.pb2.ServiceStatus(
                name=name,
                status=row["status"],
                container_id=row.get("container_id", ""),
                ports=[int(p) for p in row.get("ports", [])],
                health_checks=checks,
                started_at=int(row.get("started_at") or 0),
                resource_usage=self.pb2.ResourceUsage(
                    cpu_percent=float(usage.get("cpu_percent", 0.0)),
                    memory_bytes=int(usage.get("memory_bytes", 0)),
                    network_rx_bytes=int(usage.get("network_rx_bytes", 0)),
                    network_tx_bytes=int(usage.get("network_tx_bytes", 0)),
                    network_scope=str(usage.get("network_scope", "")),
                )
                if usage
                else None,
            )
        return self.pb2.ServicesStatusResponse(services=out)

    async def StreamHealth(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Real probe results as the health checker makes them; ends when the caller goes."""
        names = set(request.service_names)
        if names:
            async with aborting(context):  # unknown names are an error, not an empty stream
                await self.control.call("service_registry", "status", sorted(names))
        sub = await self.health.subscribe(lambda u: not names or u["service"] in names)
        try:
            while True:
                u = await sub.get()
                yield self.pb2.HealthUpdate(
                    service_name=u["service"],
                    healthy=bool(u["healthy"]),
                    message=u["message"],
                    timestamp=int(u["timestamp"]),
                    details=string_map(u.get("details") or {}),
                )
        finally:
            self.health.unsubscribe(sub)

    async def PullImages(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async with aborting(context):
            op_id = await self.control.call("service_registry", "pull", list(request.image_names))
        async for u in self._op_stream(op_id, context):
            yield self.pb2.ImagePullProgress(
                image_name=u["image_name"],
                status=u["status"],
                current=int(u["current"]),
                total=int(u["total"]),
                progress_percent=int(u["progress_percent"]),
                message=u.get("message", ""),
            )

    async def StreamLogs(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        if not request.service_name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "service_name: is required")
        tail = request.tail if request.tail > 0 else None
        if request.HasField("tail_lines"):
            if request.tail_lines < 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tail_lines: must be >= 0")
            tail = request.tail_lines
        if is_runtime_actor(request.service_name):
            async for entry in self._actor_log(request.service_name, tail, request.follow, context):
                yield entry
            return
        try:
            sid = await self.control.call(
                "service_registry",
                "open_logs",
                request.service_name,
                request.follow,
                tail,
                float(request.since_timestamp) if request.since_timestamp > 0 else None,
            )
        except Exception as e:
            if isinstance(e, InvalidArgumentError) and "unknown service" in e.message:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            if type(e).__name__ == "LogStreamNotFoundError":  # a KeyError: its str() quotes
                await context.abort(grpc.StatusCode.NOT_FOUND, str(e.args[0] if e.args else e))
            await abort_for(context, e)
            raise
        try:
            done = False
            while not done:
                try:
                    lines, done = await self.control.call(
                        "service_registry", "read_logs", sid, LOG_READ_S
                    )
                except Exception as e:
                    await self._abort_read(context, request.service_name, e)
                    raise
                for ln in lines:
                    yield self.pb2.LogEntry(
                        service_name=ln["service_name"],
                        container_id=ln["container_id"],
                        stream=ln["stream"],
                        message=ln["message"],
                        timestamp=int(ln["timestamp"]),
                        logged_at=float(ln["timestamp"]),
                    )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.control.call("service_registry", "close_logs", sid))

    async def _actor_log(
        self, name: str, tail: int | None, follow: bool, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """A runtime actor's log (its worker's stderr, where Python logging goes), read from
        Ray's session logs by a thread; the lines carry Ray's own timestamps in their text."""
        lines = iterate_in_thread(
            lambda: self.actor_log(name, -1 if tail is None else tail, follow)
        )
        try:
            async for line in lines:
                yield self.pb2.LogEntry(service_name=name, stream="stderr", message=line)
        except LookupError as e:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"service_name: {e.args[0] if e.args else name} (runtime actors: "
                f"{', '.join(CONTROL_ACTOR_NAMES)}, {EXECUTOR_PREFIX}<class>-<n>)",
            )
        except Exception as e:
            await abort_for(context, e)
            raise
        finally:
            await lines.aclose()

    @staticmethod
    async def _abort_read(
        context: grpc.aio.ServicerContext, service: str, e: BaseException
    ) -> None:
        """Abort an open log stream whose next read failed: the registry lost the stream (it
        restarted, or dropped the stream as idle) is UNAVAILABLE (open it again); anything
        else maps as usual (an actor that cannot be reached: UNAVAILABLE; a driver error:
        INTERNAL with its message)."""
        if type(e).__name__ == "LogStreamNotFoundError":
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the log stream of {service!r} was lost (the service registry restarted or "
                "dropped it); open it again",
            )
        await abort_for(context, e)

    # ------------------------------------------------------------------ tasks and resources
    def _class(self, name: str) -> str:
        cls = CLASS_ALIASES.get(name, name) if name else "cpu_short"
        if cls not in self.class_names:
            raise InvalidArgumentError(
                "workload_class", f"unknown class {name!r}; known: {sorted(self.class_names)}"
            )
        return cls

    async def GetResourceAvailability(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            cls = self._class(request.workload_class)
            st = await self.control.call("scheduler", "status")
            hw = await asyncio.to_thread(self.hardware)
        live = st["classes"].get(cls, {})
        capacity, in_use = int(live.get("limit", 0)), int(live.get("inflight", 0))
        available = capacity > in_use and live.get("unschedulable_since") is None
        return self.pb2.ResourceAvailabilityResponse(
            available=available,
            capacity=capacity,
            in_use=in_use,
            hardware=self.pb2.HardwareInfo(
                cpu_cores=hw.cpu_count,
                memory_bytes=hw.memory_bytes,
                gpus=[
                    self.pb2.GPU(
                        index=g.index,
                        name=g.name,
                        memory_bytes=g.memory_bytes,
                        utilization_percent=g.utilization_percent,
                    )
                    for g in hw.gpus
                ],
            ),
        )

    async def ExecuteTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Submit through the scheduler and wait for the result; success = completed."""
        t0 = time.perf_counter()
        async with aborting(context):
            if request.timeout_seconds < 0:
                raise InvalidArgumentError("timeout_seconds", "must be >= 0 (0 = class default)")
            spec = {
                "task_id": request.task_id or f"exec-{uuid.uuid4().hex}",
                "task_class": self._class(request.workload_class),
                "payload": decode_payload(
                    request.payload,
                    original=self.settings.original_payload_decoding,
                    field="payload",
                ),
                "timeout_s": float(request.timeout_seconds) or None,
            }
            (res,) = await self.control.submit([spec], is_trusted(self.auth, context), "grpc")
            tid = res["task_id"]
            wait = float(request.timeout_seconds) + 5.0 if request.timeout_seconds else None
            deadline = time.monotonic() + (wait or EXECUTE_DEFAULT_TIMEOUT_S)
            st = await self._wait_terminal(tid, deadline)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        if st is None:
            return self.pb2.ExecuteTaskResponse(
                success=False, error=f"task {tid} did not finish in time", latency_ms=latency_ms
            )
        return self.pb2.ExecuteTaskResponse(
            success=st.status == "completed",
            result=st.wire_result,
            error=st.error,
            latency_ms=latency_ms,
        )

    async def _wait_terminal(self, task_id: str, deadline: float) -> TaskStatus | None:
        # the feed's head first (a cursor "from the future" comes back as the latest seq), then
        # the status: a finish after that read is after the cursor, so the long-poll sees it
        seq, _ = await self.control.call("scheduler", "changes", FROM_NOW, [task_id], 0.0, True)
        while True:
            st = (await self.control.get([task_id])).get(task_id)
            if st is not None and st.terminal:
                return st
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            seq, _ = await self.control.call(
                "scheduler", "changes", seq, [task_id], min(left, FEED_POLL_S), True
            )


def _timeout(request: Any) -> float | None:
    """A request's ``timeout_seconds`` for the registry: ``None`` (its default) when 0."""
    return float(request.timeout_seconds) if request.timeout_seconds > 0 else None

"""``orchestrator.v1.OrchestratorService``: every RPC does real work through the scheduler.

Streams never hold their own long-poll on the scheduler: task changes and events come through
one :class:`~rayinfra.api.fanout.Fanout` each, shared by every open stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from rayinfra.api import stubs
from rayinfra.api.auth import Auth
from rayinfra.api.backend import Backend
from rayinfra.api.fanout import Fanout
from rayinfra.api.grpc_common import abort_for, is_trusted, string_map
from rayinfra.errors import InvalidArgument, TaskNotFoundError
from rayinfra.scheduling.tasks import (
    TERMINAL_STATES,
    decode_timeout_seconds,
    decode_wire_payload,
    encode_wire_result,
)

FUTURE_SEQ = 2**62  # "from now on": the feed answers with its latest seq
FEED_POLL_S = 10.0
EVENT_BATCH = 1000
WORKFLOWS_UNIMPLEMENTED = (
    "the workflow engine is not available in this runtime yet; nothing was stored or run"
)


def task_feed(backend: Backend) -> Fanout:
    async def poll(after: int) -> tuple[int, list[Any]]:
        seq, changes = await backend.call("scheduler", "changes", after, None, FEED_POLL_S)
        return seq, [c for c in changes if c["kind"] == "state"]

    async def start() -> int:
        seq, _ = await backend.call("scheduler", "changes", FUTURE_SEQ, None, 0.0)
        return int(seq)

    return Fanout(poll, start)


def event_feed(backend: Backend) -> Fanout:
    async def poll(after: int) -> tuple[int, list[Any]]:
        seq, events = await backend.call(
            "scheduler", "events", after, None, None, EVENT_BATCH, FEED_POLL_S
        )
        return seq, events

    async def start() -> int:
        seq, _ = await backend.call("scheduler", "events", FUTURE_SEQ, None, None, 1, 0.0)
        return int(seq)

    return Fanout(poll, start)


def _task_result(pb2: Any, st: dict[str, Any]) -> Any:
    started, finished = st.get("started_at"), st.get("finished_at")
    duration_ms = 0.0
    if started:
        duration_ms = ((finished or time.time()) - started) * 1000.0
    result = st.get("result")
    return pb2.TaskResult(
        task_id=st["task_id"],
        status=st["status"],
        result=encode_wire_result(result) if result is not None else {},
        error=st.get("error") or "",
        duration_ms=duration_ms,
        completed_at=int(finished) if finished else 0,
    )


def _system_event(pb2: Any, e: dict[str, Any]) -> Any:
    return pb2.SystemEvent(
        event_type=e["event_type"],
        resource_id=e["resource_id"],
        data=string_map(e.get("data") or {}),
        timestamp=int(e["timestamp"]),
    )


class OrchestratorServicer:
    """Registered with ``add_OrchestratorServiceServicer_to_server``."""

    def __init__(self, backend: Backend, auth: Auth, tasks: Fanout, events: Fanout) -> None:
        self.backend = backend
        self.auth = auth
        self.tasks = tasks
        self.events = events
        self.pb2, _ = stubs.orchestrator()

    # ------------------------------------------------------------------ tasks
    async def SubmitTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            spec = {
                "task_id": request.id or None,
                "task_class": getattr(request, "class") or "cpu_short",
                "payload": decode_wire_payload(dict(request.payload)),
                "priority": request.priority,
                "workflow_id": request.workflow_id,
                "timeout_s": decode_timeout_seconds(request.timeout_seconds),
            }
            (res,) = await self.backend.submit([spec], is_trusted(self.auth, context), "grpc")
        except Exception as e:
            await abort_for(context, e)
            raise
        return self.pb2.SubmitTaskResponse(success=True, task_id=res["task_id"], error="")

    async def GetTaskStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if not request.task_id:
                raise InvalidArgument("task_id", "is required")
            st = (await self.backend.get([request.task_id])).get(request.task_id)
            if st is None:
                raise TaskNotFoundError(request.task_id)
        except Exception as e:
            await abort_for(context, e)
            raise
        result = st.get("result")
        return self.pb2.GetTaskStatusResponse(
            task_id=st["task_id"],
            status=st["status"],
            result=encode_wire_result(result) if result is not None else {},
            error=st.get("error") or "",
        )

    async def StreamTaskResults(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Each state change once, from the change feed; with ``include_completed`` the
        requested tasks' current state first (finished ones included)."""
        ids = set(request.task_ids)
        sub = await self.tasks.subscribe(lambda c: not ids or c["key"] in ids)
        try:
            sent_terminal: set[str] = set()
            if ids:
                try:
                    current = await self.backend.get(sorted(ids))
                except Exception as e:
                    await abort_for(context, e)
                    raise
                for tid, st in current.items():
                    if st is None:
                        continue
                    terminal = st["status"] in TERMINAL_STATES
                    if terminal and not request.include_completed:
                        continue
                    if terminal:
                        sent_terminal.add(tid)
                    yield _task_result(self.pb2, st)
            while True:
                if sub.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "stream reader too slow; resubscribe"
                    )
                change = await sub.get()
                tid = change["key"]
                if tid in sent_terminal:
                    continue  # already sent as its final state
                data = change["data"]
                yield _task_result(
                    self.pb2,
                    {
                        "task_id": tid,
                        "status": data["status"],
                        "result": data.get("result"),
                        "error": data.get("error", ""),
                        "started_at": data.get("started_at"),
                        "finished_at": data.get("finished_at"),
                    },
                )
        finally:
            self.tasks.unsubscribe(sub)

    # ------------------------------------------------------------------ metrics, events, health
    async def GetMetrics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            metrics = await self.backend.metrics()
        except Exception as e:
            await abort_for(context, e)
            raise
        names = list(request.metric_names)
        if names:
            metrics = {
                k: v
                for k, v in metrics.items()
                if any(k == n or k.startswith(n + "{") for n in names)
            }
        return self.pb2.MetricsResponse(metrics=metrics, timestamp=int(time.time()))

    async def StreamEvents(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Replays from ``since_timestamp`` (inclusive) out of the events table, then follows."""
        types = set(request.event_types)
        sub = await self.events.subscribe(lambda e: not types or e["event_type"] in types)
        try:
            last_seq = 0
            if request.since_timestamp > 0:
                cursor: int | None = None
                while True:
                    try:
                        if cursor is None:
                            seq, rows = await self.backend.call(
                                "scheduler", "events", 0, request.since_timestamp,
                                sorted(types) or None, EVENT_BATCH, 0.0,
                            )  # fmt: skip
                        else:
                            seq, rows = await self.backend.call(
                                "scheduler", "events", cursor, None,
                                sorted(types) or None, EVENT_BATCH, 0.0,
                            )  # fmt: skip
                    except Exception as e:
                        await abort_for(context, e)
                        raise
                    for ev in rows:
                        last_seq = max(last_seq, ev["seq"])
                        yield _system_event(self.pb2, ev)
                    if not rows or seq >= self.events.seq:
                        break
                    cursor = seq
            while True:
                if sub.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "stream reader too slow; resubscribe"
                    )
                ev = await sub.get()
                if ev["seq"] <= last_seq:
                    continue  # already replayed
                yield _system_event(self.pb2, ev)
        finally:
            self.events.unsubscribe(sub)

    async def Health(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        healthy, services = await self.backend.health()
        return self.pb2.HealthResponse(
            healthy=healthy, version=self.backend.version(), services=services
        )

    # ------------------------------------------------------------------ workflows (not yet)
    async def CreateWorkflow(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, WORKFLOWS_UNIMPLEMENTED)

    async def StartWorkflowRun(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, WORKFLOWS_UNIMPLEMENTED)

    async def StreamWorkflowStatus(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, WORKFLOWS_UNIMPLEMENTED)
        yield  # pragma: no cover - makes this a server-streaming handler

"""``orchestrator.v1.OrchestratorService``: every RPC does real work through the scheduler.

Streams never hold their own long-poll on the scheduler: task changes and events come through
one :class:`~rayinfra.api.fanout.Fanout` each, shared by every open stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from rayinfra import json_input
from rayinfra._version import __version__
from rayinfra.api import stubs
from rayinfra.api.auth import Auth
from rayinfra.api.fanout import Fanout, Subscription
from rayinfra.api.grpc_common import (
    aborting,
    decode_payload,
    is_current_client,
    is_trusted,
    string_map,
)
from rayinfra.compat import original_status
from rayinfra.config import GatewaySection
from rayinfra.control import LIST_LIMIT_MAX, ControlPlane
from rayinfra.errors import InvalidArgumentError, PermissionDeniedError, TaskNotFoundError
from rayinfra.metrics import select_metrics
from rayinfra.models import FROM_NOW, Progress, TaskStatus, WatchedStates
from rayinfra.scheduling.tasks import decode_timeout_seconds

FEED_POLL_S = 10.0
EVENT_BATCH = 1000
LIST_LIMIT_DEFAULT = 100
POLL_TIMEOUT_MAX_S = 60.0
#: re-sends leave this share of ``gateway.stream_resend_interval_s`` early, so a reader whose
#: per-message deadline is that interval (the original GoOrchestratorClient waits 1 s for each)
#: always has the next message in time, scheduling jitter included
RESEND_LEAD = 0.9


def task_feed(control: ControlPlane) -> Fanout:
    """Every task state change (:class:`TaskStatus`), one scheduler long-poll for all streams."""

    async def poll(after: int) -> tuple[int, list[Any]]:
        return await control.changes(after, None, FEED_POLL_S, False)

    async def start() -> int:
        return (await control.changes(FROM_NOW, None, 0.0, False))[0]

    return Fanout(poll, start)


def event_feed(control: ControlPlane) -> Fanout:
    async def poll(after: int) -> tuple[int, list[Any]]:
        seq, events = await control.call(
            "scheduler", "events", after, None, None, EVENT_BATCH, FEED_POLL_S
        )
        return seq, events

    async def start() -> int:
        seq, _ = await control.call("scheduler", "events", FROM_NOW, None, None, 1, 0.0)
        return int(seq)

    return Fanout(poll, start)


def _submit_spec(request: Any, original_decoding: bool) -> dict[str, Any]:
    """A ``SubmitTaskRequest`` in the scheduler's spec keys (payload strings decoded: the
    original server's way with ``original_decoding``, else as JSON)."""
    return {
        "task_id": request.id or None,
        "task_class": getattr(request, "class") or "cpu_short",
        "payload": decode_payload(request.payload, original=original_decoding, field="payload"),
        "priority": request.priority,
        "workflow_id": request.workflow_id,
        "timeout_s": decode_timeout_seconds(request.timeout_seconds),
    }


def _system_event(pb2: Any, e: dict[str, Any]) -> Any:
    return pb2.SystemEvent(
        event_type=e["event_type"],
        resource_id=e["resource_id"],
        data=string_map(e.get("data") or {}),
        timestamp=int(e["timestamp"]),
        data_json=json.dumps(e.get("data") or {}, separators=(",", ":"), default=str),
        seq=int(e.get("seq") or 0),
    )


class OrchestratorServicer:
    """Registered with ``add_OrchestratorServiceServicer_to_server``."""

    def __init__(
        self,
        control: ControlPlane,
        auth: Auth,
        tasks: Fanout,
        events: Fanout,
        runtime_status: Callable[[list[str]], Awaitable[dict[str, Any]]],
        settings: GatewaySection | None = None,
    ) -> None:
        self.control = control
        self.runtime_status = runtime_status
        self.auth = auth
        self.tasks = tasks
        self.events = events
        self.settings = settings or GatewaySection()
        self.pb2, _ = stubs.orchestrator()

    def _spec(self, request: Any) -> dict[str, Any]:
        return _submit_spec(request, self.settings.original_payload_decoding)

    def _as_seen(self, st: TaskStatus, context: grpc.aio.ServicerContext) -> TaskStatus:
        """``st`` in the caller's vocabulary on an original RPC: a client of the original protos
        (no ``rayinfra-api`` metadata) sees a cancelled task as failed, reason cancelled."""
        return st if is_current_client(context) else original_status(st)

    # ------------------------------------------------------------------ tasks
    async def SubmitTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            spec = self._spec(request)
            (res,) = await self.control.submit([spec], is_trusted(self.auth, context), "grpc")
        return self.pb2.SubmitTaskResponse(success=True, task_id=res["task_id"], error="")

    async def SubmitTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            specs = []
            for i, t in enumerate(request.tasks):
                try:
                    specs.append(self._spec(t))
                except InvalidArgumentError as e:
                    raise type(e)(f"tasks[{i}].{e.field}", e.message) from None
            if not specs:
                raise InvalidArgumentError("tasks", "is empty: submit at least one task")
            res = await self.control.submit(specs, is_trusted(self.auth, context), "grpc")
        return self.pb2.SubmitTasksResponse(
            results=[
                self.pb2.SubmitTaskResponse(success=True, task_id=r["task_id"], error="")
                for r in res
            ]
        )

    async def GetTaskStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if not request.task_id:
                raise InvalidArgumentError("task_id", "is required")
            st = (await self.control.get([request.task_id])).get(request.task_id)
            if st is None:
                raise TaskNotFoundError(request.task_id)
        return self._as_seen(st, context).to_pb(self.pb2.GetTaskStatusResponse)

    async def GetTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            ids = _distinct(request.task_ids)
            if not ids:
                raise InvalidArgumentError("task_ids", "is empty: name at least one task")
            found = await self.control.get(ids)
        tasks, not_found = [], []
        for tid, st in found.items():  # once: each status is decoded as it is read
            if st is None:
                not_found.append(tid)
            else:
                tasks.append(st.to_pb(self.pb2.GetTaskStatusResponse))
        return self.pb2.GetTasksResponse(tasks=tasks, not_found=not_found)

    async def CancelTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if not request.task_id:
                raise InvalidArgumentError("task_id", "is required")
            self._require_trust(context, "cancelling a task")
            res = await self.control.cancel(request.task_id)
        return self.pb2.CancelTaskResponse(
            task_id=res["task_id"], status=res["status"], cancelled=res["cancelled"]
        )

    async def ListTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if request.limit < 0:  # 0: the default; the rest is checked by list_tasks
                raise InvalidArgumentError("limit", f"must be between 0 and {LIST_LIMIT_MAX}")
            page = await self.control.list_tasks(
                request.status or None,
                request.task_class or None,
                request.limit or LIST_LIMIT_DEFAULT,
                request.after or None,
            )
        return self.pb2.ListTasksResponse(
            tasks=[st.to_pb(self.pb2.GetTaskStatusResponse) for st in page.tasks],
            next=page.next or "",
        )

    async def PurgeTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if request.older_than_seconds < 0:
                raise InvalidArgumentError(
                    "older_than_seconds", "must be >= 0 (unset: the retention)"
                )
            self._require_trust(context, "purging tasks")
            deleted = await self.control.purge(
                request.older_than_seconds if request.HasField("older_than_seconds") else None
            )
        return self.pb2.PurgeTasksResponse(deleted={k: int(v) for k, v in deleted.items()})

    async def GetRuntimeStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            st = await self.runtime_status(_distinct(request.service_names))
        return self.pb2.GetRuntimeStatusResponse(status_json=json.dumps(st, default=str))

    async def PollTaskChanges(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if request.after_seq < 0:
                raise InvalidArgumentError("after_seq", "must be >= 0")
            if not 0 <= request.timeout_seconds <= POLL_TIMEOUT_MAX_S:
                raise InvalidArgumentError(
                    "timeout_seconds", f"must be between 0 and {POLL_TIMEOUT_MAX_S:g}"
                )
            seq, states = await self.control.changes(
                request.after_seq,
                _distinct(request.task_ids) or None,
                request.timeout_seconds,
                request.terminal_only,
            )
        return self.pb2.PollTaskChangesResponse(
            seq=seq, changes=[st.to_pb(self.pb2.TaskResult) for st in states]
        )

    def _require_trust(self, context: grpc.aio.ServicerContext, what: str) -> None:
        if not is_trusted(self.auth, context):
            raise PermissionDeniedError(
                f"{what} needs the runtime's token (authorization: Bearer <token>, from the "
                "gateway token file)"
            )

    async def StreamTaskResults(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Each state change once, from the change feed; with ``include_completed`` the
        requested tasks' current state first (finished ones included).

        Unless the request asks for ``changes_only``, the watched tasks' latest states are also
        re-sent every ``gateway.stream_resend_interval_s`` (the original re-sent every second,
        and its clients read with a per-message deadline): the requested tasks (finished ones
        too with ``include_completed``), or for a stream of every task its unfinished ones."""
        ids = set(request.task_ids)
        seen: Callable[[TaskStatus], TaskStatus] = (
            _as_is if is_current_client(context) else original_status
        )
        interval = 0.0 if request.changes_only else self.settings.stream_resend_interval_s
        period = interval * RESEND_LEAD
        watched = WatchedStates(ids, request.include_completed)
        sub = await self.tasks.subscribe(lambda st: not ids or st.task_id in ids)
        result = self.pb2.TaskResult
        progress = Progress()
        loop = asyncio.get_running_loop()
        try:
            if ids:
                async with aborting(context):
                    current = await self.control.get(sorted(ids))
                for st in current.values():
                    if st is None or (st.terminal and not request.include_completed):
                        continue
                    progress.advance(st)
                    watched.saw(st)
                    yield seen(st).to_pb(result)
            next_resend = loop.time() + period
            while True:
                try:
                    change: TaskStatus = await _next(
                        sub, context, next_resend - loop.time() if period > 0 else None
                    )
                except TimeoutError:
                    now = time.time()
                    for st in watched.states():
                        yield seen(st).to_pb(result, now)
                    next_resend += period
                    if next_resend <= loop.time():  # fell behind: a whole period from now
                        next_resend = loop.time() + period
                    continue
                for st in progress.news(change):  # not older than what was sent already
                    watched.saw(st)
                    yield seen(st).to_pb(result)
        finally:
            self.tasks.unsubscribe(sub)

    # ------------------------------------------------------------------ metrics, events, health
    async def GetMetrics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            metrics = await self.control.metrics()
        if request.metric_names:
            metrics = select_metrics(metrics, request.metric_names)
        return self.pb2.MetricsResponse(metrics=metrics, timestamp=int(time.time()))

    async def StreamEvents(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Replays after ``after_seq`` (a resumed stream), else from ``since_timestamp``
        (inclusive), out of the events table; then follows."""
        types = set(request.event_types)
        if request.after_seq < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "after_seq: must be >= 0")
        sub = await self.events.subscribe(lambda e: not types or e["event_type"] in types)
        try:
            last_seq = request.after_seq
            if request.after_seq > 0 or request.since_timestamp > 0:
                # the first page after the seq or by timestamp, the next ones after its last seq
                after = request.after_seq
                since = None if after else request.since_timestamp
                while True:
                    async with aborting(context):
                        seq, rows = await self.control.call(
                            "scheduler", "events", after, since, sorted(types) or None,
                            EVENT_BATCH, 0.0,
                        )  # fmt: skip
                    for ev in rows:
                        last_seq = max(last_seq, ev["seq"])
                        yield _system_event(self.pb2, ev)
                    if not rows or seq >= self.events.seq:
                        break
                    after, since = seq, None
            while True:
                ev = await _next(sub, context)
                if ev["seq"] <= last_seq:
                    continue  # already replayed
                yield _system_event(self.pb2, ev)
        finally:
            self.events.unsubscribe(sub)

    async def Health(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        healthy, services = await self.control.health_report()
        return self.pb2.HealthResponse(healthy=healthy, version=__version__, services=services)

    # ------------------------------------------------------------------ workflows
    async def CreateWorkflow(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            spec = _workflow_spec(request)
            saved = await self.control.create_workflow(
                spec, request.id, trusted=is_trusted(self.auth, context)
            )
        return self.pb2.CreateWorkflowResponse(
            success=True,
            workflow_id=saved["id"],
            error="",
            workflow_json=json.dumps(saved, separators=(",", ":")),
        )

    async def StartWorkflowRun(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if not request.workflow_id:
                raise InvalidArgumentError("workflow_id", "is required")
            record = await self.control.start_workflow_run(
                request.workflow_id,
                request.idempotency_key,
                decode_payload(
                    request.input, original=self.settings.original_payload_decoding, field="input"
                ),
            )
        return self.pb2.StartWorkflowRunResponse(
            success=True, run_id=record["id"], error="", reused=bool(record.get("reused"))
        )

    async def GetWorkflowRun(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            record = await self.control.get_workflow_run(_run_id(request))
        return self.pb2.WorkflowRunResponse(run_json=json.dumps(record, separators=(",", ":")))

    async def ListWorkflows(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            if request.limit < 0:
                raise InvalidArgumentError("limit", "must be >= 0 (0: 50)")
            if request.workflow_id:
                items = await self.control.list_workflow_runs(
                    request.workflow_id, request.limit or 50
                )
            else:
                items = await self.control.list_workflows()
        return self.pb2.ListWorkflowsResponse(items_json=json.dumps(items, separators=(",", ":")))

    async def CancelWorkflowRun(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with aborting(context):
            record = await self.control.cancel_workflow_run(_run_id(request))
        return self.pb2.WorkflowRunResponse(run_json=json.dumps(record, separators=(",", ":")))

    async def StreamWorkflowStatus(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async with aborting(context):
            async for p in self.control.workflow_status(_run_id(request)):
                yield self.pb2.WorkflowStatusUpdate(
                    run_id=p["run_id"],
                    status=p["status"],
                    current_step=p["current_step"],
                    steps_completed=p["steps_completed"],
                    total_steps=p["total_steps"],
                    output=string_map(p["output"]),
                    error=p["error"],
                )


def _as_is(st: TaskStatus) -> TaskStatus:
    return st


def _run_id(request: Any) -> str:
    if not request.run_id:
        raise InvalidArgumentError("run_id", "is required")
    return str(request.run_id)


def _workflow_spec(request: Any) -> dict[str, Any]:
    """A ``CreateWorkflowRequest``'s spec (JSON bytes); its ``id``/``name``/``description``
    fields fill what the spec leaves out."""
    if not request.spec:
        raise InvalidArgumentError("spec", "is required: the workflow as JSON")
    try:
        spec = json_input.loads(request.spec)
    except ValueError as e:  # UnicodeDecodeError and too deep included
        raise InvalidArgumentError("spec", f"is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise InvalidArgumentError("spec", "must be a JSON object")
    for key in ("name", "description"):
        if getattr(request, key) and not spec.get(key):
            spec[key] = getattr(request, key)
    return spec


async def _next(
    sub: Subscription, context: grpc.aio.ServicerContext, timeout_s: float | None = None
) -> Any:
    """The next item of a stream's subscription (``TimeoutError`` after ``timeout_s`` without
    one); RESOURCE_EXHAUSTED once it overflowed."""
    if sub.overflowed:
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "stream reader too slow; resubscribe"
        )
    return await sub.get(timeout_s)


def _distinct(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))

"""The client's primitives over gRPC, through the gateway: ``AgentInfra(transport=GrpcTransport(
addr))`` or ``AgentInfra(orchestrator_addr=...)``.

The gateway's ``orchestrator.v1`` service: the original RPCs plus rayinfra's ``SubmitTasks``,
``GetTasks``, ``CancelTask``, ``ListTasks``, ``PurgeTasks`` and ``PollTaskChanges`` (the
scheduler's task feed, which the client's waits and result streams follow as over actors).

Every call carries ``authorization: Bearer <token>`` when a token is known (the configured auth
token, else this user's local gateway token file), so auth-required gateways and ``shell`` /
``python`` tasks work without extra setup.

``UNAVAILABLE`` (the gateway, the scheduler or the whole runtime restarting) is retried with
bounded exponential back-off (tenacity; a log line per attempt) for up to
``DSPY_AGENT_SERVICE_TIMEOUT`` seconds, then the call raises one
:class:`~rayinfra.errors.UnavailableError` saying so; submits stay idempotent because the client
fills in a missing task id before the first try. Each attempt has a deadline, so a gateway that
accepts connections but never answers cannot hang a call. The channel itself re-dials within
the same back-off cap (gRPC's own default would wait up to 120 s), so a runtime started again
at the same address is found within a couple of seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from rayinfra.api import stubs
from rayinfra.errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    NotTrustedError,
    PermissionDeniedError,
    StorageFullError,
    TaskConflictError,
    TaskNotFoundError,
    UnavailableError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
)
from rayinfra.models import FROM_NOW, TaskPage, TaskStatus
from rayinfra.scheduling.tasks import PRIORITY_MAX, PRIORITY_MIN, decode_wire_payload

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_FIRST_S = 0.05
ANSWER_S = 30.0  # how long one attempt may wait for an answer, beyond what the call asks for
GET_CHUNK = 5000  # ids per GetTasks call: a page of statuses stays far below 4 MiB
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def gateway_channel(
    addr: str, tls_ca: bytes | None, *, aio: bool = False, redial_max_s: float = 2.0
) -> Any:
    """A gRPC channel to a gateway at ``addr`` (a ``grpc.aio`` one with ``aio``): TLS verified
    against ``tls_ca`` (PEM) when given, else plaintext; messages up to
    :data:`MAX_MESSAGE_BYTES` either way; a lost connection re-dialled at least every
    ``redial_max_s``."""
    api = grpc.aio if aio else grpc
    redial_ms = max(100, int(redial_max_s * 1000))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", min(100, redial_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, redial_ms)),
        ("grpc.max_reconnect_backoff_ms", redial_ms),
    ]
    if tls_ca is None:
        return api.insecure_channel(addr, options=options)
    creds = grpc.ssl_channel_credentials(root_certificates=tls_ca)
    return api.secure_channel(addr, creds, options=options)


def unavailable(e: BaseException) -> bool:
    """A call (sync or aio) that broke because the gateway could not be reached, or went away
    under it: UNAVAILABLE, or UNKNOWN "Stream removed", which grpc answers for a stream whose
    connection closed (grpc/grpc#34076)."""
    if not isinstance(e, grpc.RpcError):
        return False
    code = e.code()
    if code == grpc.StatusCode.UNKNOWN:
        return (e.details() or "").startswith("Stream removed")
    return bool(code == grpc.StatusCode.UNAVAILABLE)


def retry_unavailable(addr: str, method: str, *, stop: Any, backoff_s: float) -> dict[str, Any]:
    """tenacity's arguments (for ``Retrying`` and ``AsyncRetrying`` alike) that retry a call to
    the gateway at ``addr`` broken by UNAVAILABLE: exponential back-off up to ``backoff_s``, a
    WARNING per attempt, until ``stop`` (a tenacity stop condition); then the last error."""
    from tenacity import RetryCallState, retry_if_exception, wait_exponential

    def note(state: RetryCallState) -> None:
        e = state.outcome.exception() if state.outcome else None
        log.warning(
            "rayinfra gateway at %s unavailable (%s): %s attempt %d failed, next in %.2fs",
            addr,
            e.details() if isinstance(e, grpc.RpcError) else e,
            method,
            state.attempt_number,
            state.upcoming_sleep,
        )

    return {
        "stop": stop,
        "wait": wait_exponential(multiplier=RETRY_FIRST_S, max=backoff_s),
        "retry": retry_if_exception(unavailable),
        "before_sleep": note,
        "reraise": True,
    }


def gave_up(addr: str, method: str, retry_for_s: float, e: grpc.RpcError) -> BaseException:
    """The error a call raises once it stopped retrying: UNAVAILABLE for ``retry_for_s`` is
    one :class:`UnavailableError` naming the setting; anything else its typed error."""
    if unavailable(e):
        return UnavailableError(
            f"rayinfra is unavailable: the gateway at {addr} did not answer {method} "
            f"for {retry_for_s:g}s (DSPY_AGENT_SERVICE_TIMEOUT; last error: "
            f"{e.details()})"
        )
    return error_from_rpc(e)


class ConnectError(ConnectionError):
    """Nothing answered at the gateway's address within the connect timeout."""

    def __init__(self, addr: str, timeout_s: float) -> None:
        super().__init__(f"no gateway answered at {addr} within {timeout_s:g}s")


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents ``token`` to a gateway (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _field_error(cls: type[InvalidArgumentError], details: str) -> InvalidArgumentError:
    """``"field: message"`` (how the gateway words INVALID_ARGUMENT) back into the exception."""
    field_name, sep, message = details.partition(": ")
    if not sep or " " in field_name:
        return cls("request", details)
    return cls(field_name, message)


def error_from_rpc(e: grpc.RpcError) -> BaseException:
    """The typed error a gateway status stands for (the same ones the actor path raises)."""
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _field_error(InvalidArgumentError, details)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return _field_error(TaskConflictError, details)
    if code == grpc.StatusCode.NOT_FOUND:
        for cls in (WorkflowRunNotFoundError, WorkflowNotFoundError):  # "workflow 'x' not found"
            prefix = f"{cls.WHAT} '"
            if details.startswith(prefix) and details.endswith("' not found"):
                return cls(details[len(prefix) : -len("' not found")])
        return TaskNotFoundError(details.removeprefix("unknown task "))
    if code == grpc.StatusCode.PERMISSION_DENIED:
        field_name = details.partition(": ")[0]
        if field_name.startswith(("payload", "tasks[", "nodes[", "task_class")):
            return _field_error(NotTrustedError, details.split(": present the token")[0])
        return PermissionDeniedError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return BackendUnavailableError(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return PermissionDeniedError(
            f"the gateway refused the token ({details}); set RAYINFRA_AUTH_TOKEN to its token"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(StorageFullError.PREFIX):
        return StorageFullError(details.removeprefix(StorageFullError.PREFIX).partition(")")[0])
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(f"gateway unavailable: {details}")
    return RuntimeError(f"gateway error {code.name}: {details}")


class GrpcTransport:
    """The client's primitives over one gRPC channel to the gateway at ``addr``.

    ``token`` is sent as ``authorization: Bearer``; ``tls_ca`` (PEM) makes the channel TLS.
    :meth:`open` waits ``connect_timeout_s`` for the channel; ``UNAVAILABLE`` (the gateway or
    the scheduler restarting, or not up yet) is retried for ``retry_for_s`` with back-off up to
    ``backoff_s``.
    """

    kind = "grpc"

    def __init__(
        self,
        addr: str,
        *,
        token: str | None = None,
        tls_ca: bytes | None = None,
        connect_timeout_s: float = 5.0,
        retry_for_s: float = 60.0,
        backoff_s: float = 2.0,
    ) -> None:
        self.addr = addr
        self.connect_timeout_s = connect_timeout_s
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self._metadata = bearer_metadata(token)
        self._tls_ca = tls_ca
        self.pb2, self._pb2_grpc = stubs.orchestrator()
        self._channel: Any = None
        self._stub: Any = None

    async def open(self) -> None:
        """Create the channel (on this event loop: a grpc.aio channel belongs to one) and wait
        for it to connect. A gateway whose scheduler is not ready yet answers UNAVAILABLE,
        which every call retries for ``retry_for_s``."""
        self._channel = gateway_channel(
            self.addr, self._tls_ca, aio=True, redial_max_s=self.backoff_s
        )
        self._stub = self._pb2_grpc.OrchestratorServiceStub(self._channel)
        wait = self.connect_timeout_s
        try:
            await asyncio.wait_for(self._channel.channel_ready(), wait)
        except asyncio.TimeoutError:
            raise ConnectError(self.addr, wait) from None

    def _retrying(self, method: str, *, forever: bool = False) -> Any:
        """tenacity's loop for ``method`` (:func:`retry_unavailable`), for ``retry_for_s``
        (``forever``: for as long as the caller waits)."""
        from tenacity import AsyncRetrying, stop_after_delay, stop_never

        stop = stop_never if forever else stop_after_delay(self.retry_for_s)
        return AsyncRetrying(
            **retry_unavailable(self.addr, method, stop=stop, backoff_s=self.backoff_s)
        )

    def _error(self, method: str, e: grpc.aio.AioRpcError) -> BaseException:
        return gave_up(self.addr, method, self.retry_for_s, e)

    async def _unary(self, method: str, request: Any, answer_s: float = ANSWER_S) -> Any:
        """Call ``method``, each attempt answered within ``answer_s``, under :meth:`_retrying`."""
        try:
            async for attempt in self._retrying(method):
                with attempt:
                    return await getattr(self._stub, method)(
                        request, metadata=self._metadata, timeout=answer_s
                    )
        except grpc.aio.AioRpcError as e:
            raise self._error(method, e) from None
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True above

    async def _stream(
        self, method: str, request_for: Callable[[], Any], convert: Callable[[Any], T]
    ) -> AsyncIterator[T]:
        """A server stream that outlives a restart of the gateway or the whole runtime: broken
        by UNAVAILABLE, it is opened again with ``request_for()`` (which resumes from what the
        caller has seen) under :meth:`_retrying`, for as long as the caller iterates (as a
        ``wait_tasks`` waits out a restart). Ends when the server ends it."""
        try:
            async for attempt in self._retrying(method, forever=True):
                with attempt:
                    call = getattr(self._stub, method)(request_for(), metadata=self._metadata)
                    try:
                        async for m in call:
                            yield convert(m)
                        return
                    finally:
                        call.cancel()
        except grpc.aio.AioRpcError as e:
            raise self._error(method, e) from None

    # ------------------------------------------------------------------ tasks
    def _request(self, spec: Mapping[str, Any]) -> Any:
        unknown = sorted(
            set(spec) - {"task_id", "payload", "task_class", "priority", "timeout_s", "workflow_id"}
        )
        if unknown:
            raise InvalidArgumentError(unknown[0], "unknown task field")
        for key in ("task_id", "task_class", "workflow_id"):
            value = spec.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(key, f"must be a string, got {type(value).__name__}")
        payload = spec.get("payload") or {}
        if not isinstance(payload, Mapping):
            raise InvalidArgumentError(
                "payload", f"must be an object, got {type(payload).__name__}"
            )
        timeout_s = spec.get("timeout_s")
        if timeout_s is not None and (not isinstance(timeout_s, int | float) or timeout_s <= 0):
            raise InvalidArgumentError("timeout_s", f"must be a number > 0, got {timeout_s!r}")
        priority = spec.get("priority", 0)
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not PRIORITY_MIN <= priority <= PRIORITY_MAX
        ):
            raise InvalidArgumentError(
                "priority",
                f"must be an integer in [{PRIORITY_MIN}, {PRIORITY_MAX}], got {priority!r}",
            )
        try:  # one JSON document: native types survive the string map exactly
            payload_json = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError("payload", f"must be JSON: {e}") from None
        return self.pb2.SubmitTaskRequest(
            id=spec.get("task_id") or uuid.uuid4().hex,  # fixed now: a retried submit is a repeat
            **{"class": spec.get("task_class") or "cpu_short"},
            payload={"payload_json": payload_json},
            priority=priority,
            workflow_id=spec.get("workflow_id") or "",
            timeout_seconds=float(timeout_s or 0.0),
        )

    async def submit(self, specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not specs:
            return []
        requests = []
        for i, spec in enumerate(specs):
            try:
                requests.append(self._request(spec))
            except InvalidArgumentError as e:
                if len(specs) == 1:
                    raise
                raise InvalidArgumentError(f"tasks[{i}].{e.field}", e.message) from None
        if len(requests) == 1:
            r = await self._unary("SubmitTask", requests[0])
            return [{"success": r.success, "task_id": r.task_id, "error": r.error}]
        res = await self._unary("SubmitTasks", self.pb2.SubmitTasksRequest(tasks=requests))
        return [{"success": r.success, "task_id": r.task_id, "error": r.error} for r in res.results]

    async def get(
        self, task_ids: Sequence[str], finished_only: bool = False
    ) -> Mapping[str, TaskStatus | None]:
        found: dict[str, TaskStatus | None] = {}
        for i in range(0, len(task_ids), GET_CHUNK):  # each call well under the message limit
            chunk = list(task_ids[i : i + GET_CHUNK])
            res = await self._unary("GetTasks", self.pb2.GetTasksRequest(task_ids=chunk))
            found.update((m.task_id, TaskStatus.from_pb(m)) for m in res.tasks)
        statuses = {tid: found.get(tid) for tid in task_ids}
        if finished_only:  # (the wire has no such filter: left out here)
            return {t: st for t, st in statuses.items() if st is None or st.terminal}
        return statuses

    async def cancel(self, task_id: str) -> dict[str, Any]:
        r = await self._unary("CancelTask", self.pb2.CancelTaskRequest(task_id=task_id))
        return {"task_id": r.task_id, "status": r.status, "cancelled": r.cancelled}

    async def list_tasks(
        self, status: str | None, task_class: str | None, limit: int, after: str | None = None
    ) -> TaskPage:
        res = await self._unary(
            "ListTasks",
            self.pb2.ListTasksRequest(
                status=status or "", task_class=task_class or "", limit=limit, after=after or ""
            ),
        )
        return TaskPage([TaskStatus.from_pb(m) for m in res.tasks], res.next or None)

    async def purge(self, older_than_s: float | None) -> dict[str, int]:
        res = await self._unary(
            "PurgeTasks", self.pb2.PurgeTasksRequest(older_than_seconds=older_than_s)
        )
        return dict(res.deleted)

    async def changes(
        self,
        after_seq: int,
        task_ids: Sequence[str] | None,
        timeout_s: float,
        terminal_only: bool,
        keep: Collection[str] | None = None,
    ) -> tuple[int, list[TaskStatus]]:
        res = await self._unary(
            "PollTaskChanges",
            self.pb2.PollTaskChangesRequest(
                after_seq=after_seq,
                task_ids=list(task_ids or ()),
                timeout_seconds=timeout_s,
                terminal_only=terminal_only,
            ),
            answer_s=timeout_s + ANSWER_S,
        )
        changes = res.changes
        if keep is not None:  # before decoding
            changes = [m for m in changes if m.task_id in keep]
        return int(res.seq), [TaskStatus.from_pb(m) for m in changes]

    async def events(
        self, event_types: Sequence[str] | None, since_timestamp: int, after_seq: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        if not after_seq and not since_timestamp:  # "from now", pinned: a resume skips nothing
            after_seq, _ = await self.changes(FROM_NOW, None, 0.0, False)
        cursor = after_seq
        types = list(event_types or ())

        def request() -> Any:
            if cursor:
                return self.pb2.StreamEventsRequest(event_types=types, after_seq=cursor)
            return self.pb2.StreamEventsRequest(event_types=types, since_timestamp=since_timestamp)

        def event(m: Any) -> dict[str, Any]:
            return {
                "event_type": m.event_type,
                "resource_id": m.resource_id,
                "data": json.loads(m.data_json) if m.data_json else dict(m.data),
                "timestamp": m.timestamp,
                "seq": m.seq,
            }

        async for ev in self._stream("StreamEvents", request, event):
            cursor = ev["seq"] or cursor
            yield ev

    async def metrics(self) -> dict[str, float]:
        res = await self._unary("GetMetrics", self.pb2.GetMetricsRequest())
        return dict(res.metrics)

    async def runtime_status(self, services: Sequence[str]) -> dict[str, Any]:
        res = await self._unary(
            "GetRuntimeStatus", self.pb2.GetRuntimeStatusRequest(service_names=list(services))
        )
        return dict(json.loads(res.status_json))

    async def health(self) -> dict[str, Any]:
        res = await self._unary("Health", self.pb2.HealthRequest())
        return {"healthy": res.healthy, "version": res.version, "services": dict(res.services)}

    # ------------------------------------------------------------------ workflows
    async def create_workflow(self, spec: Mapping[str, Any], workflow_id: str) -> dict[str, Any]:
        try:
            body = json.dumps(dict(spec), separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError("spec", f"must be JSON: {e}") from None
        res = await self._unary(
            "CreateWorkflow",
            self.pb2.CreateWorkflowRequest(
                id=workflow_id, name=str(spec.get("name", "")), spec=body
            ),
        )
        saved: dict[str, Any] = json.loads(res.workflow_json) if res.workflow_json else {}
        return saved or {"id": res.workflow_id}

    async def start_workflow_run(
        self, workflow_id: str, idempotency_key: str, run_input: Mapping[str, Any]
    ) -> dict[str, Any]:
        res = await self._unary(
            "StartWorkflowRun",
            self.pb2.StartWorkflowRunRequest(
                workflow_id=workflow_id,
                idempotency_key=idempotency_key,
                input={"payload_json": json.dumps(dict(run_input), separators=(",", ":"))},
            ),
        )
        return {**await self.get_workflow_run(res.run_id), "reused": res.reused}

    async def get_workflow_run(self, run_id: str) -> dict[str, Any]:
        res = await self._unary("GetWorkflowRun", self.pb2.WorkflowRunRequest(run_id=run_id))
        return dict(json.loads(res.run_json))

    async def list_workflows(self) -> list[dict[str, Any]]:
        res = await self._unary("ListWorkflows", self.pb2.ListWorkflowsRequest())
        return list(json.loads(res.items_json))

    async def list_workflow_runs(self, workflow_id: str, limit: int) -> list[dict[str, Any]]:
        if not workflow_id:
            raise InvalidArgumentError("workflow_id", "is required")
        res = await self._unary(
            "ListWorkflows", self.pb2.ListWorkflowsRequest(workflow_id=workflow_id, limit=limit)
        )
        return list(json.loads(res.items_json))

    async def cancel_workflow_run(self, run_id: str) -> dict[str, Any]:
        res = await self._unary("CancelWorkflowRun", self.pb2.WorkflowRunRequest(run_id=run_id))
        return dict(json.loads(res.run_json))

    async def workflow_status(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        def status(m: Any) -> dict[str, Any]:
            return {
                "run_id": m.run_id,
                "status": m.status,
                "current_step": m.current_step,
                "steps_completed": m.steps_completed,
                "total_steps": m.total_steps,
                "output": decode_wire_payload(dict(m.output)),
                "error": m.error,
            }

        request = self.pb2.StreamWorkflowStatusRequest(run_id=run_id)
        async for st in self._stream("StreamWorkflowStatus", lambda: request, status):
            yield st  # a resumed stream starts with the run's state then: nothing is missed

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

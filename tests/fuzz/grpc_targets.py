"""Every gRPC method the gateway serves, read from the generated descriptors, how to call it
with raw bytes, and what keeps each call harmless to a shared runtime.

A method is called with a generic channel (no serializer): whatever bytes the fuzzer makes reach
the server as they are. Before they are sent, a *guard* may rewrite a request that parses (it
then reaches the handler): ids it creates get the run's prefix, task payloads become no-ops
(``noop``, not even ``echo``: an echo's result is its hostile payload, and thousands of those
make each later read of the change feed megabytes),
services and images it names cannot exist, long-polls do not wait. Bytes that do not parse are
never rewritten: the server must refuse them.

:data:`GUARDS` classifies every method; a method the descriptors list and the table does not
fails ``test_every_method_is_fuzzed`` until someone decides whether it is safe to fuzz.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from rayinfra import json_input
from rayinfra.api import stubs
from rayinfra.config import CLASS_ALIASES
from tests.support.cheap_tasks import cheap_wire_payload, cheap_workflow

#: codes the API answers bad input with (docs/api.md, "Errors"); UNIMPLEMENTED only for a
#: method the server does not have, which no target is
TYPED_CODES = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
    }
)
#: where a loopback registry port refuses connections at once: images named here cannot be
#: pulled, quickly (the discard port; nothing listens on it in a test machine)
NO_REGISTRY = "127.0.0.1:9/"


@dataclass(frozen=True)
class Prefixes:
    """Ids the fuzzer creates: tasks, workflows, runs (never a workflow it created: a run of a
    generated workflow could do work), services and images that cannot exist."""

    run: str

    def of(self, kind: str) -> str:
        return f"fz{kind}-{self.run}-"


@dataclass(frozen=True)
class GrpcTarget:
    server: str  # the gateway config key of the server: orchestrator_grpc_addr, ...
    service: str  # full service name
    method: str
    request: type  # the request message class
    kind: str  # unary_unary, unary_stream or stream_stream

    @property
    def id(self) -> str:
        return f"{self.service}/{self.method}"

    @property
    def path(self) -> str:
        return f"/{self.id}"


def _kind(m: MethodDescriptor) -> str:
    if m.client_streaming:
        return "stream_stream" if m.server_streaming else "stream_unary"
    return "unary_stream" if m.server_streaming else "unary_unary"


def _targets(server: str, service: ServiceDescriptor) -> list[GrpcTarget]:
    return [
        GrpcTarget(
            server,
            service.full_name,
            m.name,
            message_factory.GetMessageClass(m.input_type),
            _kind(m),
        )
        for m in service.methods
    ]


def services() -> dict[str, list[ServiceDescriptor]]:
    """The services of each gRPC server, from the generated descriptors. gRPC health checking
    and reflection (the same code on both servers) are fuzzed on the orchestrator's."""
    opb, _ = stubs.orchestrator()
    epb, _ = stubs.env_manager()
    return {
        "orchestrator_grpc_addr": [
            *opb.DESCRIPTOR.services_by_name.values(),
            health_pb2.DESCRIPTOR.services_by_name["Health"],
            reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
        ],
        "env_manager_grpc_addr": list(epb.DESCRIPTOR.services_by_name.values()),
    }


def discover() -> list[GrpcTarget]:
    return [t for server, svcs in services().items() for s in svcs for t in _targets(server, s)]


# ----------------------------------------------------------------------------- guards

Guard = Callable[[Any, Prefixes, bool], None]  # (parsed request, prefixes, original decoding)


def _prefixed(value: str, prefix: str) -> str:
    return f"{prefix}{value}" if value else value


def _cheap_map(m: Any, original: bool) -> None:
    fixed = cheap_wire_payload(dict(m), original=original, noop_only=True)
    if fixed != dict(m):
        m.clear()
        m.update(fixed)


def _task(t: Any, p: Prefixes, original: bool) -> None:
    t.id = _prefixed(t.id, p.of("t"))
    _cheap_map(t.payload, original)


def _tasks(r: Any, p: Prefixes, original: bool) -> None:
    for t in r.tasks:
        _task(t, p, original)


def _execute(r: Any, p: Prefixes, original: bool) -> None:
    r.task_id = _prefixed(r.task_id, p.of("t"))
    _cheap_map(r.payload, original)
    # a GPU class is unschedulable on the test runtime: ExecuteTask would wait for it to fail
    if CLASS_ALIASES.get(r.workload_class, r.workload_class).startswith("gpu"):
        r.workload_class = "cpu_short"


def _create_workflow(r: Any, p: Prefixes, original: bool) -> None:
    r.id = _prefixed(r.id, p.of("w"))
    try:
        spec = json_input.loads(r.spec)
    except ValueError:
        return  # not JSON: refused
    cheap = cheap_workflow(spec, p.of("w"), noop_only=True)
    if cheap != spec:
        r.spec = json.dumps(cheap).encode()


def _start_run(r: Any, p: Prefixes, original: bool) -> None:
    r.workflow_id = _prefixed(r.workflow_id, p.of("r"))


def _run_id(r: Any, p: Prefixes, original: bool) -> None:
    r.run_id = _prefixed(r.run_id, p.of("r"))


def _task_id(r: Any, p: Prefixes, original: bool) -> None:
    r.task_id = _prefixed(r.task_id, p.of("t"))


#: the change feed's head when this process began fuzzing PollTaskChanges (set by the worker)
FEED_HEAD = 0
#: how far behind the head a fuzzed PollTaskChanges may start reading
FEED_BEHIND = 200


def _no_wait(r: Any, p: Prefixes, original: bool) -> None:
    if 0 <= r.timeout_seconds <= 60:  # a valid long-poll: answer at once
        r.timeout_seconds = 0
    # a valid cursor reads at most FEED_BEHIND changes old: from 0 it would read the first
    # 5000 changes of the feed, the scheduler's page (tens of ms a call, megabytes with large
    # results), which would make this method most of the fuzzer's time
    if 0 <= r.after_seq < FEED_HEAD - FEED_BEHIND:
        r.after_seq = FEED_HEAD - FEED_BEHIND


def _service_names(r: Any, p: Prefixes, original: bool) -> None:
    names = [_prefixed(n, p.of("s")) or p.of("s") for n in r.service_names] or [p.of("s")]
    del r.service_names[:]
    r.service_names.extend(names)


def _service_name(r: Any, p: Prefixes, original: bool) -> None:
    r.service_name = _prefixed(r.service_name, p.of("s"))


def _image_names(r: Any, p: Prefixes, original: bool) -> None:
    names = [NO_REGISTRY + n for n in r.image_names] or [f"{NO_REGISTRY}{p.of('i')}x"]
    del r.image_names[:]
    r.image_names.extend(names)


_O, _E = stubs.ORCHESTRATOR_SERVICE, stubs.ENV_MANAGER_SERVICE
#: every method: None = read-only, safe with any request; else the guard that makes it so
GUARDS: dict[str, Guard | None] = {
    f"{_O}/SubmitTask": _task,
    f"{_O}/SubmitTasks": _tasks,
    f"{_O}/StreamTaskResults": None,
    f"{_O}/GetTaskStatus": None,
    f"{_O}/GetTasks": None,
    f"{_O}/CancelTask": _task_id,  # needs the token, which the fuzzer never sends
    f"{_O}/ListTasks": None,
    f"{_O}/PurgeTasks": None,  # needs the token, which the fuzzer never sends
    f"{_O}/PollTaskChanges": _no_wait,
    f"{_O}/GetRuntimeStatus": None,
    f"{_O}/CreateWorkflow": _create_workflow,
    f"{_O}/StartWorkflowRun": _start_run,
    f"{_O}/GetWorkflowRun": None,
    f"{_O}/CancelWorkflowRun": _run_id,
    f"{_O}/ListWorkflows": None,
    f"{_O}/StreamWorkflowStatus": None,
    f"{_O}/GetMetrics": None,
    f"{_O}/StreamEvents": None,
    f"{_O}/Health": None,
    f"{_E}/StartServices": _service_names,  # names that cannot exist (empty = every service)
    f"{_E}/StopServices": _service_names,
    f"{_E}/RestartService": _service_name,
    f"{_E}/PruneServices": None,  # the test runtime has no orphaned services
    f"{_E}/GetServicesStatus": None,
    f"{_E}/StreamHealth": None,
    f"{_E}/GetResourceAvailability": None,
    f"{_E}/ExecuteTask": _execute,
    f"{_E}/PullImages": _image_names,
    f"{_E}/StreamLogs": None,
    "grpc.health.v1.Health/Check": None,
    "grpc.health.v1.Health/List": None,
    "grpc.health.v1.Health/Watch": None,
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
}


def guarded(target: GrpcTarget, raw: bytes, prefixes: Prefixes, original: bool) -> bytes:
    """``raw`` as it is sent: rewritten by the target's guard when it parses and the guard
    changes it, else unchanged (every bytes quirk kept)."""
    guard = GUARDS[target.id]
    if guard is None:
        return raw
    try:
        request = target.request.FromString(raw)
    except DecodeError:
        return raw  # refused by the server
    before = request.SerializeToString()
    guard(request, prefixes, original)
    after = request.SerializeToString()
    return raw if after == before else bytes(after)


# ----------------------------------------------------------------------------- calling

#: a unary call must answer within this; a stream is read this long (then it is "open")
UNARY_DEADLINE_S = 30.0
STREAM_WINDOW_S = 0.05


@dataclass(frozen=True)
class Outcome:
    code: str  # a grpc.StatusCode name, or OPEN: a stream still open after the window
    details: str
    response: bytes | None = None  # a unary call's response
    messages: int = 0  # a stream's messages within the window


class Caller:
    """Calls targets over one channel per server; thread-safe (grpc channels are)."""

    def __init__(self, channels: dict[str, grpc.Channel], metadata: tuple[Any, ...] = ()) -> None:
        self.channels = channels
        self.metadata = metadata
        self._calls: dict[str, Any] = {}

    def _callable(self, t: GrpcTarget) -> Any:
        fn = self._calls.get(t.id)
        if fn is None:
            fn = getattr(self.channels[t.server], t.kind)(t.path)
            self._calls[t.id] = fn
        return fn

    def call(self, t: GrpcTarget, raw: bytes, window_s: float = STREAM_WINDOW_S) -> Outcome:
        """Call ``t`` with ``raw``; a stream is read for ``window_s``."""
        fn = self._callable(t)
        if t.kind == "unary_unary":
            try:
                return Outcome("OK", "", fn(raw, timeout=UNARY_DEADLINE_S, metadata=self.metadata))
            except grpc.RpcError as e:
                return Outcome(e.code().name, e.details() or "")
        if t.kind == "unary_stream":
            stream = fn(raw, timeout=window_s, metadata=self.metadata)
        else:
            stream = fn(iter([raw]), timeout=window_s, metadata=self.metadata)
        n = 0
        try:
            for _ in stream:
                n += 1
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Outcome("OPEN", "", messages=n)
            return Outcome(e.code().name, e.details() or "", messages=n)
        return Outcome("OK", "", messages=n)


# ----------------------------------------------------------------------------- the property

#: an INVALID_ARGUMENT names what is wrong: the request's type when it does not parse, else
#: the field's path (``task_id``, ``tasks[2].payload.payload_json``, ``nodes[0].task.class``,
#: ``payload["a key"]``)
NAMES_A_FIELD = re.compile(
    r'request is not a valid [\w.]+: |(?:[\w.@-]|\[(?:\d+|"(?:[^"\\]|\\.)*")\])+: '
)
#: grpc health's own servicer: NOT_FOUND without a message for an unknown service, and List
#: left unimplemented by its library (docs/api.md)
HEALTH = "grpc.health.v1.Health/"


def judge(t: GrpcTarget, o: Outcome) -> str | None:
    """Why ``o`` breaks the property, or None: a typed status (docs/api.md, "Errors"), never
    INTERNAL, UNKNOWN, UNAVAILABLE or a unary call past its deadline; an error with a message,
    INVALID_ARGUMENT naming the field; a stream may still be open after its window."""
    allowed = TYPED_CODES | ({"OPEN"} if t.kind != "unary_unary" else set())
    if t.id == f"{HEALTH}List" and o.code == "UNIMPLEMENTED":
        return None if "not implemented" in o.details.lower() else f"UNIMPLEMENTED: {o.details}"
    if o.code not in allowed:
        return f"{o.code}: {o.details[:500]}"
    if o.code in ("OK", "OPEN"):
        return None
    if not o.details and not (t.id.startswith(HEALTH) and o.code == "NOT_FOUND"):
        return f"{o.code} without a message"
    if o.code == "INVALID_ARGUMENT" and not NAMES_A_FIELD.match(o.details):
        return f"INVALID_ARGUMENT naming no field: {o.details[:500]}"
    return None


def accepted_task_ids(t: GrpcTarget, o: Outcome) -> tuple[str, ...]:
    """The ids of the tasks a successful call created (ExecuteTask waits for its own)."""
    if o.code != "OK" or o.response is None:
        return ()
    if t.id == f"{stubs.ORCHESTRATOR_SERVICE}/SubmitTask":
        return (_response(t, o).task_id,)
    if t.id == f"{stubs.ORCHESTRATOR_SERVICE}/SubmitTasks":
        return tuple(r.task_id for r in _response(t, o).results)
    return ()


def _response(t: GrpcTarget, o: Outcome) -> Any:
    opb, _ = stubs.orchestrator()
    cls = {"SubmitTask": opb.SubmitTaskResponse, "SubmitTasks": opb.SubmitTasksResponse}
    return cls[t.method].FromString(o.response)

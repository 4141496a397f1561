"""The gRPC wire contract (docs: /work/shared/reference/api.md) and the committed generated stubs.

- drift: regenerating rayinfra/api/proto/*.proto with scripts/gen_protos.py gives the committed
  descriptors (serialized FileDescriptorProtos are compared, not text);
- contract: every RPC and every field of both services equals the table below, transcribed from
  api.md, so an accidental edit of a .proto fails here;
- the original-layout fixtures (tests/fixtures/proto_original) are ours minus the new field 6;
- laziness: ``import rayinfra`` never loads rayinfra.api.generated;
- interop: a client generated from the ORIGINAL protos (in a subprocess: one process cannot hold
  both, "duplicate symbol") talks to a grpc.aio server built from rayinfra's stubs.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import difflib
import importlib.util
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    descriptor_pb2,
    text_format,
)

from rayinfra.api import stubs
from rayinfra.api.generated import (
    env_manager_v1_pb2,
    env_manager_v1_pb2_grpc,
    orchestrator_v1_pb2,
    orchestrator_v1_pb2_grpc,
)
from tests.support.original_client import FIXTURE_DIR, ORIGINAL_PROTOS, generate_original_client

ROOT = Path(__file__).resolve().parents[2]
GENERATED_DIR = ROOT / "rayinfra" / "api" / "generated"

# ---------------------------------------------------------------------------------------------
# The contract, transcribed from api.md. RPC: (request, response, server-streaming).
# Fields: "number type name" in api.md's notation; the only addition to the original is
# SubmitTaskRequest's "6 double timeout_seconds".
# ---------------------------------------------------------------------------------------------
ORCHESTRATOR: dict[str, Any] = {
    "package": "orchestrator.v1",
    "service": "OrchestratorService",
    "rpcs": {
        "SubmitTask": ("SubmitTaskRequest", "SubmitTaskResponse", False),
        "StreamTaskResults": ("StreamTaskResultsRequest", "TaskResult", True),
        "GetTaskStatus": ("GetTaskStatusRequest", "GetTaskStatusResponse", False),
        "CreateWorkflow": ("CreateWorkflowRequest", "CreateWorkflowResponse", False),
        "StartWorkflowRun": ("StartWorkflowRunRequest", "StartWorkflowRunResponse", False),
        "StreamWorkflowStatus": ("StreamWorkflowStatusRequest", "WorkflowStatusUpdate", True),
        "GetMetrics": ("GetMetricsRequest", "MetricsResponse", False),
        "StreamEvents": ("StreamEventsRequest", "SystemEvent", True),
        "Health": ("HealthRequest", "HealthResponse", False),
    },
    "messages": {
        "SubmitTaskRequest": "1 string id; 2 string class; 3 map<string,string> payload; "
        "4 int32 priority; 5 string workflow_id; 6 double timeout_seconds",
        "SubmitTaskResponse": "1 bool success; 2 string task_id; 3 string error",
        "StreamTaskResultsRequest": "1 repeated string task_ids; 2 bool include_completed",
        "TaskResult": "1 string task_id; 2 string status; 3 map<string,string> result; "
        "4 string error; 5 double duration_ms; 6 int64 completed_at",
        "GetTaskStatusRequest": "1 string task_id",
        "GetTaskStatusResponse": "1 string task_id; 2 string status; "
        "3 map<string,string> result; 4 string error",
        "CreateWorkflowRequest": "1 string id; 2 string name; 3 string description; 4 bytes spec",
        "CreateWorkflowResponse": "1 bool success; 2 string workflow_id; 3 string error",
        "StartWorkflowRunRequest": "1 string workflow_id; 2 string idempotency_key; "
        "3 map<string,string> input",
        "StartWorkflowRunResponse": "1 bool success; 2 string run_id; 3 string error",
        "StreamWorkflowStatusRequest": "1 string run_id",
        "WorkflowStatusUpdate": "1 string run_id; 2 string status; 3 string current_step; "
        "4 int32 steps_completed; 5 int32 total_steps; 6 map<string,string> output; "
        "7 string error",
        "GetMetricsRequest": "1 repeated string metric_names",
        "MetricsResponse": "1 map<string,double> metrics; 2 int64 timestamp",
        "StreamEventsRequest": "1 repeated string event_types; 2 int64 since_timestamp",
        "SystemEvent": "1 string event_type; 2 string resource_id; 3 map<string,string> data; "
        "4 int64 timestamp",
        "HealthRequest": "",
        "HealthResponse": "1 bool healthy; 2 string version; 3 map<string,string> services",
    },
}
ENV_MANAGER: dict[str, Any] = {
    "package": "env_manager.v1",
    "service": "EnvManagerService",
    "rpcs": {
        "StartServices": ("StartServicesRequest", "ServiceStatusUpdate", True),
        "StopServices": ("StopServicesRequest", "StopServicesResponse", False),
        "RestartService": ("RestartServiceRequest", "RestartServiceResponse", False),
        "GetServicesStatus": ("GetServicesStatusRequest", "ServicesStatusResponse", False),
        "StreamHealth": ("StreamHealthRequest", "HealthUpdate", True),
        "GetResourceAvailability": (
            "GetResourceAvailabilityRequest",
            "ResourceAvailabilityResponse",
            False,
        ),
        "ExecuteTask": ("ExecuteTaskRequest", "ExecuteTaskResponse", False),
        "PullImages": ("PullImagesRequest", "ImagePullProgress", True),
        "StreamLogs": ("StreamLogsRequest", "LogEntry", True),
    },
    "messages": {
        "StartServicesRequest": "1 repeated string service_names; 2 bool parallel; "
        "3 map<string,string> overrides",
        "ServiceStatusUpdate": "1 string service_name; 2 string status; 3 string message; "
        "4 int32 progress",
        "StopServicesRequest": "1 repeated string service_names; 2 int32 timeout_seconds",
        "StopServicesResponse": "1 bool success; 2 map<string,string> service_results",
        "RestartServiceRequest": "1 string service_name; 2 int32 timeout_seconds",
        "RestartServiceResponse": "1 bool success; 2 string message",
        "GetServicesStatusRequest": "1 repeated string service_names",
        "ServicesStatusResponse": "1 map<string,ServiceStatus> services",
        "ServiceStatus": "1 string name; 2 string status; 3 string container_id; "
        "4 repeated int32 ports; 5 map<string,string> health_checks; 6 int64 started_at; "
        "7 ResourceUsage resource_usage",
        "ResourceUsage": "1 double cpu_percent; 2 int64 memory_bytes; 3 int64 network_rx_bytes; "
        "4 int64 network_tx_bytes",
        "StreamHealthRequest": "1 repeated string service_names; 2 int32 interval_seconds",
        "HealthUpdate": "1 string service_name; 2 bool healthy; 3 string message; "
        "4 int64 timestamp; 5 map<string,string> details",
        "GetResourceAvailabilityRequest": "1 string workload_class",
        "ResourceAvailabilityResponse": "1 bool available; 2 int32 capacity; 3 int32 in_use; "
        "4 HardwareInfo hardware",
        "HardwareInfo": "1 int32 cpu_cores; 2 int64 memory_bytes; 3 repeated GPU gpus",
        "GPU": "1 int32 index; 2 string name; 3 int64 memory_bytes; 4 double utilization_percent",
        "ExecuteTaskRequest": "1 string task_id; 2 string workload_class; "
        "3 map<string,string> payload; 4 int32 timeout_seconds",
        "ExecuteTaskResponse": "1 bool success; 2 map<string,string> result; 3 string error; "
        "4 double latency_ms",
        "PullImagesRequest": "1 repeated string image_names",
        "ImagePullProgress": "1 string image_name; 2 string status; 3 int64 current; "
        "4 int64 total; 5 int32 progress_percent",
        "StreamLogsRequest": "1 string service_name; 2 bool follow; 3 int32 tail; "
        "4 int64 since_timestamp",
        "LogEntry": "1 string service_name; 2 string container_id; 3 string stream; "
        "4 string message; 5 int64 timestamp",
    },
}
# What rayinfra adds on top of the original layout (api.md: "adding new RPCs or new fields with
# new numbers is fine"): fields per message, and whole RPCs with their new messages. They give
# AgentInfra over gRPC the surface it has over actor handles (rayinfra/client/grpc_transport.py),
# and `rayinfra services`/`logs` what they print (env_manager.v1, rayinfra/client/services.py).
NEW_FIELDS: dict[str, dict[str, set[str]]] = {
    "orchestrator.v1": {
        "SubmitTaskRequest": {"6 double timeout_seconds"},
        "StreamTaskResultsRequest": {"3 bool changes_only"},
        "TaskResult": {
            "7 string result_json",
            "8 int32 attempts",
            "9 double started_at",
            "10 double finished_at",
        },
        "GetTaskStatusResponse": {
            "5 string result_json",
            "6 int32 attempts",
            "7 double duration_ms",
            "8 int64 completed_at",
            "9 string task_class",
            "10 int32 priority",
            "11 double submitted_at",
            "12 double started_at",
            "13 double finished_at",
            "14 string workflow_id",
            "15 double timeout_seconds",
        },
        "SystemEvent": {"5 string data_json", "6 int64 seq"},
        "StreamEventsRequest": {"3 int64 after_seq"},
        "CreateWorkflowResponse": {"4 string workflow_json"},
        "StartWorkflowRunResponse": {"4 bool reused"},
    },
    "env_manager.v1": {
        "ServiceStatusUpdate": {"5 bool required"},
        "ResourceUsage": {"5 string network_scope"},
        "ImagePullProgress": {"6 string message"},
        "StreamLogsRequest": {"5 optional int32 tail_lines"},
        "LogEntry": {"6 double logged_at"},
    },
}
NEW_RPCS: dict[str, dict[str, tuple[str, str, bool]]] = {
    "orchestrator.v1": {
        "SubmitTasks": ("SubmitTasksRequest", "SubmitTasksResponse", False),
        "GetTasks": ("GetTasksRequest", "GetTasksResponse", False),
        "CancelTask": ("CancelTaskRequest", "CancelTaskResponse", False),
        "ListTasks": ("ListTasksRequest", "ListTasksResponse", False),
        "PurgeTasks": ("PurgeTasksRequest", "PurgeTasksResponse", False),
        "PollTaskChanges": ("PollTaskChangesRequest", "PollTaskChangesResponse", False),
        "GetRuntimeStatus": ("GetRuntimeStatusRequest", "GetRuntimeStatusResponse", False),
        "GetWorkflowRun": ("WorkflowRunRequest", "WorkflowRunResponse", False),
        "CancelWorkflowRun": ("WorkflowRunRequest", "WorkflowRunResponse", False),
        "ListWorkflows": ("ListWorkflowsRequest", "ListWorkflowsResponse", False),
    },
    "env_manager.v1": {
        "PruneServices": ("PruneServicesRequest", "StopServicesResponse", False),
    },
}
NEW_MESSAGES: dict[str, dict[str, str]] = {
    "orchestrator.v1": {
        "SubmitTasksRequest": "1 repeated SubmitTaskRequest tasks",
        "SubmitTasksResponse": "1 repeated SubmitTaskResponse results",
        "GetTasksRequest": "1 repeated string task_ids",
        "GetTasksResponse": "1 repeated GetTaskStatusResponse tasks; 2 repeated string not_found",
        "CancelTaskRequest": "1 string task_id",
        "CancelTaskResponse": "1 string task_id; 2 string status; 3 bool cancelled",
        "ListTasksRequest": "1 string status; 2 string task_class; 3 int32 limit; 4 string after",
        "ListTasksResponse": "1 repeated GetTaskStatusResponse tasks; 2 string next",
        "PurgeTasksRequest": "1 optional double older_than_seconds",
        "PurgeTasksResponse": "1 map<string,int64> deleted",
        "PollTaskChangesRequest": "1 int64 after_seq; 2 repeated string task_ids; "
        "3 double timeout_seconds; 4 bool terminal_only",
        "PollTaskChangesResponse": "1 int64 seq; 2 repeated TaskResult changes",
        "GetRuntimeStatusRequest": "1 repeated string service_names",
        "GetRuntimeStatusResponse": "1 string status_json",
        "WorkflowRunRequest": "1 string run_id",
        "WorkflowRunResponse": "1 string run_json",
        "ListWorkflowsRequest": "1 string workflow_id; 2 int32 limit",
        "ListWorkflowsResponse": "1 string items_json",
    },
    "env_manager.v1": {"PruneServicesRequest": "1 int32 timeout_seconds"},
}


def _with_additions(contract: dict[str, Any]) -> dict[str, Any]:
    """The contract as rayinfra serves it: api.md's plus the additions above."""
    pkg = contract["package"]
    messages = dict(contract["messages"])
    for name, fields in NEW_FIELDS.get(pkg, {}).items():
        have = [f for f in messages[name].split("; ") if f]
        extra = sorted(fields - set(have), key=lambda f: int(f.split()[0]))
        messages[name] = "; ".join(have + extra)
    messages.update(NEW_MESSAGES.get(pkg, {}))
    return {
        **contract,
        "rpcs": {**contract["rpcs"], **NEW_RPCS.get(pkg, {})},
        "messages": messages,
    }


CONTRACTS = {
    "orchestrator": (_with_additions(ORCHESTRATOR), orchestrator_v1_pb2),
    "env_manager": (_with_additions(ENV_MANAGER), env_manager_v1_pb2),
}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _F.TYPE_DOUBLE: "double",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_INT64: "int64",
    _F.TYPE_UINT64: "uint64",
    _F.TYPE_INT32: "int32",
    _F.TYPE_FIXED64: "fixed64",
    _F.TYPE_FIXED32: "fixed32",
    _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "bytes",
    _F.TYPE_UINT32: "uint32",
    _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64",
    _F.TYPE_SINT32: "sint32",
    _F.TYPE_SINT64: "sint64",
}


# ----------------------------------------------------------------------------- helpers
def _file_proto(serialized: bytes) -> Any:
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def _type_name(fdp: Any, f: Any) -> str:
    if f.type in _SCALARS:
        return str(_SCALARS[f.type])
    assert f.type == _F.TYPE_MESSAGE, (
        f"{f.name}: unexpected type {f.type} (enums are not in api.md)"
    )
    prefix = f".{fdp.package}."
    assert f.type_name.startswith(prefix), f.type_name
    return str(f.type_name[len(prefix) :])


def _render_message(fdp: Any, msg: Any) -> str:
    """A message's fields as "number type name; ..." (api.md's notation), by field number."""
    maps = {n.name: n for n in msg.nested_type if n.options.map_entry}
    assert len(maps) == len(msg.nested_type), f"{msg.name}: nested messages other than map entries"
    # proto3 ``optional`` (explicit presence, in rayinfra's additions only) makes a synthetic
    # oneof per field; real oneofs are not in api.md
    synthetic = {f.oneof_index for f in msg.field if f.proto3_optional}
    real_oneofs = [o.name for i, o in enumerate(msg.oneof_decl) if i not in synthetic]
    assert not msg.enum_type and not real_oneofs, f"{msg.name}: enums/oneofs are not in api.md"
    parts = []
    for f in sorted(msg.field, key=lambda f: f.number):
        entry = maps.get(f.type_name.rsplit(".", 1)[-1]) if f.type == _F.TYPE_MESSAGE else None
        if entry is not None and f.type_name == f".{fdp.package}.{msg.name}.{entry.name}":
            assert f.label == _F.LABEL_REPEATED
            key, value = sorted(entry.field, key=lambda e: e.number)
            typ = f"map<{_type_name(fdp, key)},{_type_name(fdp, value)}>"
        elif f.label == _F.LABEL_REPEATED:
            typ = f"repeated {_type_name(fdp, f)}"
        else:
            assert f.label == _F.LABEL_OPTIONAL, f"{msg.name}.{f.name}: label {f.label}"
            typ = ("optional " if f.proto3_optional else "") + _type_name(fdp, f)
        parts.append(f"{f.number} {typ} {f.name}")
    return "; ".join(parts)


def _render(fdp: Any) -> dict[str, Any]:
    """The contract-relevant content of a FileDescriptorProto, in the shape of the tables above."""
    assert fdp.syntax == "proto3", fdp.syntax
    assert len(fdp.service) == 1, [s.name for s in fdp.service]
    assert not fdp.dependency and not fdp.enum_type, "api.md has no imports or enums"
    svc = fdp.service[0]
    prefix = f".{fdp.package}."
    rpcs = {}
    for m in svc.method:
        assert not m.client_streaming, f"{m.name}: no client streaming in api.md"
        assert m.input_type.startswith(prefix) and m.output_type.startswith(prefix)
        rpcs[m.name] = (
            m.input_type[len(prefix) :],
            m.output_type[len(prefix) :],
            m.server_streaming,
        )
    return {
        "package": fdp.package,
        "service": svc.name,
        "rpcs": rpcs,
        "messages": {msg.name: _render_message(fdp, msg) for msg in fdp.message_type},
    }


def _load_gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serialized_from_source(path: Path) -> bytes:
    """The FileDescriptorProto bytes a generated ``_pb2.py`` registers, read without importing it
    (importing a second copy would clash with the committed one in protobuf's default pool)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            value = ast.literal_eval(node.args[0])
            assert isinstance(value, bytes)
            return value
    raise AssertionError(f"{path}: no AddSerializedFile(...) call")


# ----------------------------------------------------------------------------- drift
@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("regenerated")
    files = _load_gen_protos().generate(out)
    assert {f.name for f in files} == {
        p.name for p in GENERATED_DIR.iterdir() if p.suffix in {".py", ".pyi"}
    }, "committed stubs and a fresh generation have different file sets"
    return out


@pytest.mark.parametrize(
    "module", [orchestrator_v1_pb2, env_manager_v1_pb2], ids=lambda m: m.__name__.rsplit(".", 1)[-1]
)
def test_committed_stubs_match_protos(regenerated: Path, module: ModuleType) -> None:
    stem = module.__name__.rsplit(".", 1)[-1]
    fresh = _serialized_from_source(regenerated / f"{stem}.py")
    committed = module.DESCRIPTOR.serialized_pb
    if fresh != committed:
        diff = "\n".join(
            difflib.unified_diff(
                text_format.MessageToString(_file_proto(committed)).splitlines(),
                text_format.MessageToString(_file_proto(fresh)).splitlines(),
                "committed",
                "regenerated",
                lineterm="",
            )
        )
        pytest.fail(
            f"{stem}: committed stubs are stale; run `python scripts/gen_protos.py`\n{diff}"
        )
    assert _file_proto(fresh) == _file_proto(committed)


def test_generated_grpc_modules_import_package_correctly(regenerated: Path) -> None:
    for stem in ("orchestrator_v1", "env_manager_v1"):
        for directory in (regenerated, GENERATED_DIR):
            text = (directory / f"{stem}_pb2_grpc.py").read_text(encoding="utf-8")
            assert f"from rayinfra.api.generated import {stem}_pb2 as " in text
            assert f"\nimport {stem}_pb2" not in text
    # the descriptor names are the bare file names (visible through server reflection)
    assert orchestrator_v1_pb2.DESCRIPTOR.name == "orchestrator_v1.proto"
    assert env_manager_v1_pb2.DESCRIPTOR.name == "env_manager_v1.proto"
    assert vars(orchestrator_v1_pb2_grpc)["orchestrator__v1__pb2"] is orchestrator_v1_pb2
    assert vars(env_manager_v1_pb2_grpc)["env__manager__v1__pb2"] is env_manager_v1_pb2


def test_gen_protos_is_deterministic_and_check_mode_works(
    tmp_path: Path, regenerated: Path
) -> None:
    """Generation twice gives identical bytes; main() writes, --check then passes, and a stale
    file fails --check (a temporary target: the committed files are compared by descriptor)."""
    gen_protos = _load_gen_protos()
    again = tmp_path / "again"
    again.mkdir()
    for f in gen_protos.generate(again):
        assert f.read_bytes() == (regenerated / f.name).read_bytes(), f.name
    target = tmp_path / "target"
    assert gen_protos.main(["--out", str(target)]) == 0
    assert gen_protos.main(["--check", "--out", str(target)]) == 0
    (target / "stale_pb2.py").write_text("", encoding="utf-8")
    assert gen_protos.main(["--check", "--out", str(target)]) == 1
    assert gen_protos.main(["--out", str(target)]) == 0
    assert not (target / "stale_pb2.py").exists()


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_protos_match_api_md(name: str) -> None:
    contract, module = CONTRACTS[name]
    rendered = _render(_file_proto(module.DESCRIPTOR.serialized_pb))
    assert rendered["package"] == contract["package"]
    assert rendered["service"] == contract["service"]
    assert rendered["rpcs"] == contract["rpcs"]
    assert rendered["messages"] == contract["messages"]


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_runtime_descriptors_match_api_md(name: str) -> None:
    """The same through the loaded descriptors (what the server actually serves)."""
    contract, module = CONTRACTS[name]
    svc = module.DESCRIPTOR.services_by_name[contract["service"]]
    assert svc.full_name == f"{contract['package']}.{contract['service']}"
    assert {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in svc.methods
    } == contract["rpcs"]
    assert not any(m.client_streaming for m in svc.methods)
    assert set(module.DESCRIPTOR.message_types_by_name) == set(contract["messages"])
    for msg_name, fields in contract["messages"].items():
        desc = module.DESCRIPTOR.message_types_by_name[msg_name]
        want = {int(f.split()[0]): f.split()[-1] for f in fields.split("; ") if f}
        assert {f.number: f.name for f in desc.fields} == want, msg_name


class _RecordingChannel:
    """Stands in for grpc.Channel: records what the generated Stub registers."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[str, Any, Any]] = {}

    def _record(self, kind: str) -> Any:
        def register(
            path: str, request_serializer: Any, response_deserializer: Any, **_: Any
        ) -> str:
            self.calls[path] = (kind, request_serializer, response_deserializer)
            return path

        return register

    def __getattr__(self, kind: str) -> Any:
        if kind in {"unary_unary", "unary_stream", "stream_unary", "stream_stream"}:
            return self._record(kind)
        raise AttributeError(kind)


class _RecordingServer:
    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers[service] = handlers


@pytest.mark.parametrize(
    ("contract", "pb2", "pb2_grpc"),
    [
        (_with_additions(ORCHESTRATOR), orchestrator_v1_pb2, orchestrator_v1_pb2_grpc),
        (_with_additions(ENV_MANAGER), env_manager_v1_pb2, env_manager_v1_pb2_grpc),
    ],
    ids=["orchestrator", "env_manager"],
)
def test_grpc_stub_and_servicer_paths_match_api_md(
    contract: dict[str, Any], pb2: ModuleType, pb2_grpc: ModuleType
) -> None:
    full = f"{contract['package']}.{contract['service']}"
    channel = _RecordingChannel()
    getattr(pb2_grpc, f"{contract['service']}Stub")(channel)
    want_calls = {
        f"/{full}/{rpc}": (
            "unary_stream" if streaming else "unary_unary",
            getattr(pb2, req).SerializeToString,
            getattr(pb2, resp).FromString,
        )
        for rpc, (req, resp, streaming) in contract["rpcs"].items()
    }
    assert channel.calls == want_calls

    server = _RecordingServer()
    servicer = getattr(pb2_grpc, f"{contract['service']}Servicer")()
    getattr(pb2_grpc, f"add_{contract['service']}Servicer_to_server")(servicer, server)
    handlers = server.handlers[full]
    assert set(handlers) == set(contract["rpcs"])
    for rpc, (req, resp, streaming) in contract["rpcs"].items():
        h = handlers[rpc]
        assert (h.request_streaming, h.response_streaming) == (False, streaming), rpc
        assert h.request_deserializer == getattr(pb2, req).FromString, rpc
        assert h.response_serializer == getattr(pb2, resp).SerializeToString, rpc


# ----------------------------------------------------------------------------- original layout
@pytest.fixture(scope="module")
def original_descriptors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """FileDescriptorProtos of the original-layout fixtures (protoc in a subprocess)."""
    out = tmp_path_factory.mktemp("original_descriptors")
    result = {}
    for proto in ORIGINAL_PROTOS:
        target = out / f"{proto}.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{FIXTURE_DIR}",
                f"--descriptor_set_out={target}",
                proto,
            ],
            cwd=FIXTURE_DIR,
            check=True,
            capture_output=True,
            timeout=60,
        )
        fds = descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())
        assert len(fds.file) == 1
        result[proto] = fds.file[0].SerializeToString()
    return result


@pytest.mark.parametrize(
    ("proto", "contract"),
    [("orchestrator.v1.proto", ORCHESTRATOR), ("env_manager.v1.proto", ENV_MANAGER)],
)
def test_original_fixtures_are_ours_without_new_fields(
    original_descriptors: dict[str, bytes], proto: str, contract: dict[str, Any]
) -> None:
    fdp = _file_proto(original_descriptors[proto])
    assert fdp.name == proto
    rendered = _render(fdp)
    new = NEW_FIELDS.get(contract["package"], {})
    want_messages = {
        name: "; ".join(f for f in fields.split("; ") if f and f not in new.get(name, set()))
        for name, fields in contract["messages"].items()
    }
    assert rendered == {**contract, "messages": want_messages}


# ----------------------------------------------------------------------------- laziness
def test_import_rayinfra_does_not_import_generated_stubs() -> None:
    code = (
        "import json, sys\n"
        "import rayinfra, rayinfra.client, rayinfra.api.stubs as stubs\n"
        "def gen(): return sorted(m for m in sys.modules if m.startswith('rayinfra.api.generated'))\n"
        "before = gen()\n"
        "pb2, pb2_grpc = stubs.orchestrator()\n"
        "typed = stubs.env_manager_pb2.DESCRIPTOR.name\n"
        "print(json.dumps({'before': before, 'after': gen(), 'pb2': pb2.__name__,\n"
        "    'pb2_grpc': pb2_grpc.__name__, 'typed': typed}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == [], "import rayinfra loaded generated stubs eagerly"
    assert out["pb2"] == "rayinfra.api.generated.orchestrator_v1_pb2"
    assert out["pb2_grpc"] == "rayinfra.api.generated.orchestrator_v1_pb2_grpc"
    assert out["typed"] == "env_manager_v1.proto"
    assert out["after"] == [
        "rayinfra.api.generated",
        "rayinfra.api.generated.env_manager_v1_pb2",
        "rayinfra.api.generated.orchestrator_v1_pb2",
        "rayinfra.api.generated.orchestrator_v1_pb2_grpc",
    ]


def test_stubs_accessors_in_process() -> None:
    pb2, pb2_grpc = stubs.orchestrator()
    assert pb2 is orchestrator_v1_pb2 and pb2_grpc is orchestrator_v1_pb2_grpc
    pb2, pb2_grpc = stubs.env_manager()
    assert pb2 is env_manager_v1_pb2 and pb2_grpc is env_manager_v1_pb2_grpc
    assert stubs.orchestrator_pb2 is orchestrator_v1_pb2
    assert stubs.ORCHESTRATOR_SERVICE == "orchestrator.v1.OrchestratorService"
    assert stubs.ENV_MANAGER_SERVICE == "env_manager.v1.EnvManagerService"
    with pytest.raises(AttributeError):
        _ = stubs.nope  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- interop
class _FakeOrchestrator(orchestrator_v1_pb2_grpc.OrchestratorServiceServicer):
    """A throwaway server side built from rayinfra's stubs: records what arrives."""

    def __init__(self) -> None:
        self.submitted: dict[str, orchestrator_v1_pb2.SubmitTaskRequest] = {}

    async def Health(self, request: Any, context: Any) -> Any:
        return orchestrator_v1_pb2.HealthResponse(
            healthy=True, version="fake-1", services={"scheduler": "healthy"}
        )

    async def SubmitTask(self, request: Any, context: Any) -> Any:
        self.submitted[request.id] = request
        return orchestrator_v1_pb2.SubmitTaskResponse(success=True, task_id=request.id, error="")

    async def GetTaskStatus(self, request: Any, context: Any) -> Any:
        req = self.submitted.get(request.task_id)
        if req is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown task {request.task_id}")
            raise AssertionError("abort returned")
        return orchestrator_v1_pb2.GetTaskStatusResponse(
            task_id=request.task_id, status="completed", result=dict(req.payload), error=""
        )

    async def StreamTaskResults(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for i, task_id in enumerate(request.task_ids):
            yield orchestrator_v1_pb2.TaskResult(
                task_id=task_id,
                status="completed",
                result={"i": str(i)},
                duration_ms=1.25 + i,
                completed_at=1_700_000_000_123 + i,  # int64 beyond 32 bits
            )


class _FakeEnvManager(env_manager_v1_pb2_grpc.EnvManagerServiceServicer):
    async def GetServicesStatus(self, request: Any, context: Any) -> Any:
        usage = env_manager_v1_pb2.ResourceUsage(cpu_percent=12.5, memory_bytes=3 << 32)
        status = env_manager_v1_pb2.ServiceStatus(
            name="redis",
            status="running",
            container_id="c1",
            ports=[6379, 6380],
            health_checks={"tcp": "ok"},
            started_at=1_700_000_000,
            resource_usage=usage,
        )
        names = list(request.service_names) or ["redis"]
        return env_manager_v1_pb2.ServicesStatusResponse(services={n: status for n in names})


@pytest.fixture(scope="module")
def original_client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_original_client(tmp_path_factory.mktemp("original_client"))


async def _original_client(gen_dir: Path, target: str, *args: str) -> tuple[int, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.original_client",
        "--gen-dir",
        str(gen_dir),
        "--target",
        target,
        "--timeout",
        "20",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode in (0, 2), err.decode()
    reply = json.loads(out.decode().strip().splitlines()[-1])
    assert reply["rayinfra_imported"] is False
    assert reply["modules"] == {
        "orchestrator": ["orchestrator.v1_pb2", "orchestrator.v1.proto"],
        "env_manager": ["env_manager.v1_pb2", "env_manager.v1.proto"],
    }
    return proc.returncode, reply["result"]


@contextlib.asynccontextmanager
async def _fake_server() -> AsyncIterator[tuple[str, _FakeOrchestrator]]:
    """Both fake services on one grpc.aio server on 127.0.0.1, in the running test's loop."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    orch = _FakeOrchestrator()
    # the generated grpc module is untyped
    orchestrator_v1_pb2_grpc.add_OrchestratorServiceServicer_to_server(orch, server)  # type: ignore[no-untyped-call]
    env_manager_v1_pb2_grpc.add_EnvManagerServiceServicer_to_server(_FakeEnvManager(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    await server.start()
    try:
        yield f"127.0.0.1:{port}", orch
    finally:
        await server.stop(None)


async def test_original_client_talks_to_rayinfra_stubs(original_client_dir: Path) -> None:
    async with _fake_server() as (target, orch):
        await _talk(original_client_dir, target, orch)


async def _talk(gen: Path, target: str, orch: _FakeOrchestrator) -> None:

    async def run(*args: str) -> tuple[int, Any]:
        return await _original_client(gen, target, *args)

    health, submit, env = await asyncio.gather(
        run("health"),
        run(
            "submit",
            "--id",
            "t1",
            "--class",
            "gpu_short",
            "--payload",
            "k=v",
            "x=1",
            "--priority",
            "5",
            "--workflow-id",
            "wf",
        ),
        run("env-services", "--names", "redis"),
    )
    assert health == (
        0,
        {"healthy": True, "version": "fake-1", "services": {"scheduler": "healthy"}},
    )
    assert submit == (0, {"success": True, "task_id": "t1", "error": ""})
    req = orch.submitted["t1"]
    assert (req.id, getattr(req, "class"), dict(req.payload), req.priority, req.workflow_id) == (
        "t1",
        "gpu_short",
        {"k": "v", "x": "1"},
        5,
        "wf",
    )
    assert req.timeout_seconds == 0.0  # the original client cannot send field 6: class default
    assert env == (
        0,
        {
            "services": {
                "redis": {
                    "name": "redis",
                    "status": "running",
                    "container_id": "c1",
                    "ports": [6379, 6380],
                    "health_checks": {"tcp": "ok"},
                    "started_at": 1_700_000_000,
                    "resource_usage": {
                        "cpu_percent": 12.5,
                        "memory_bytes": 3 << 32,
                        "network_rx_bytes": 0,
                        "network_tx_bytes": 0,
                    },
                }
            }
        },
    )

    status, missing, stream = await asyncio.gather(
        run("status", "--id", "t1"),
        run("status", "--id", "nope"),
        run("stream-results", "--ids", "a", "b", "c", "--limit", "2"),
    )
    assert status == (
        0,
        {"task_id": "t1", "status": "completed", "result": {"k": "v", "x": "1"}, "error": ""},
    )
    assert missing == (2, {"rpc_error": {"code": "NOT_FOUND", "details": "unknown task nope"}})
    assert stream == (
        0,
        [
            {
                "task_id": "a",
                "status": "completed",
                "result": {"i": "0"},
                "error": "",
                "duration_ms": 1.25,
                "completed_at": 1_700_000_000_123,
            },
            {
                "task_id": "b",
                "status": "completed",
                "result": {"i": "1"},
                "error": "",
                "duration_ms": 2.25,
                "completed_at": 1_700_000_000_124,
            },
        ],
    )


async def test_original_layout_keeps_new_field_as_unknown(original_client_dir: Path) -> None:
    """Our SubmitTaskRequest with field 6 parses in the original layout, which re-sends it."""
    ours = orchestrator_v1_pb2.SubmitTaskRequest(
        id="t9", payload={"a": "b"}, priority=2, timeout_seconds=2.5
    )
    setattr(ours, "class", "cpu_long")  # `class` is a Python keyword
    code, result = await _original_client(
        original_client_dir,
        "127.0.0.1:1",
        "decode",
        "--message",
        "SubmitTaskRequest",
        "--hex",
        ours.SerializeToString().hex(),
    )
    assert code == 0
    assert result["message"] == {
        "id": "t9",
        "class": "cpu_long",
        "payload": {"a": "b"},
        "priority": 2,
        "workflow_id": "",
    }
    back = orchestrator_v1_pb2.SubmitTaskRequest.FromString(
        bytes.fromhex(result["reserialized_hex"])
    )
    assert back == ours


def test_fixture_generation_writes_regular_packages(original_client_dir: Path) -> None:
    for pkg in ("orchestrator", "env_manager"):
        assert (original_client_dir / pkg / "__init__.py").is_file()
        assert (original_client_dir / pkg / "v1_pb2.py").is_file()
        grpc_src = (original_client_dir / pkg / "v1_pb2_grpc.py").read_text(encoding="utf-8")
        assert f"from {pkg} import v1_pb2 as " in grpc_src

"""A client generated from the ORIGINAL protos (tests/fixtures/proto_original), for wire tests.

The original files are ``orchestrator.v1.proto`` / ``env_manager.v1.proto`` (package
``orchestrator.v1`` / ``env_manager.v1``, no ``SubmitTaskRequest.timeout_seconds``). protoc maps the
dotted file name to the Python module ``orchestrator.v1_pb2``, i.e. module ``v1_pb2`` in a package
``orchestrator``, and writes ``orchestrator/v1_pb2.py`` + ``orchestrator/v1_pb2_grpc.py`` (which
does ``from orchestrator import v1_pb2``). :func:`generate_original_client` adds an ``__init__.py``
to each of those folders (a regular package: it then wins over any namespace portion elsewhere on
sys.path) and returns the root to put first on ``sys.path``; nothing is renamed or rewritten.

Importing these modules and rayinfra's own stubs in ONE process fails with protobuf's "duplicate
symbol" (same full names, different file), so this client always runs in its own process:

    python -m tests.support.original_client --target 127.0.0.1:PORT health
    python -m tests.support.original_client --target ... submit --id t1 --class gpu_short \\
        --payload k=v --priority 5
    python -m tests.support.original_client --target ... status --id t1
    python -m tests.support.original_client --target ... watch --ids t1 --read-deadline 1
    python -m tests.support.original_client --env-target 127.0.0.1:50100 env-execute ...

Each command prints one JSON object on stdout (streams: one JSON list) and exits 0; an RPC error
prints ``{"rpc_error": {"code": ..., "details": ...}}`` and exits 2. The process never imports
``rayinfra`` (``"rayinfra_imported"`` in every reply says so).

The generated modules are the unmodified output of protoc for the original files; the calls
are made the way the original Python clients made them (``dspy_agent/infra/grpc_client.py``'s
``OrchestratorClient`` and ``GoOrchestratorClient``, reference/seed-system.md section 6): no call
metadata, ``include_completed=True`` on StreamTaskResults, payload values as strings. ``watch``
waits for tasks as ``GoOrchestratorClient.wait_for_batch_completion`` does: an async generator
over the aio stream, each message awaited with ``asyncio.wait_for(..., read_deadline)``; a
missed deadline cancels the read, which (as in the original) closes the stream, so the tasks
still unfinished come back as ``timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "proto_original"
ORIGINAL_PROTOS = ("orchestrator.v1.proto", "env_manager.v1.proto")
# module names as protoc derives them from the original file names
MODULES = {
    "orchestrator": ("orchestrator.v1_pb2", "orchestrator.v1_pb2_grpc"),
    "env_manager": ("env_manager.v1_pb2", "env_manager.v1_pb2_grpc"),
}


def generate_original_client(out_dir: Path | str) -> Path:
    """Run grpc_tools.protoc on the original-layout fixtures into ``out_dir``; return the import root.

    Afterwards ``sys.path.insert(0, str(root)); import orchestrator.v1_pb2_grpc`` works (in a
    process that has not loaded rayinfra's stubs).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{FIXTURE_DIR}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *ORIGINAL_PROTOS,
    ]
    proc = subprocess.run(cmd, cwd=FIXTURE_DIR, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip()}")
    for pb2, pb2_grpc in MODULES.values():
        for name in (pb2, pb2_grpc):
            if not (out / (name.replace(".", "/") + ".py")).is_file():
                raise RuntimeError(f"protoc did not write module {name} under {out}")
        (out / pb2.split(".")[0] / "__init__.py").write_text("", encoding="utf-8")
    return out


def load_original_modules(root: Path | str) -> dict[str, tuple[ModuleType, ModuleType]]:
    """Import the generated original-layout modules from ``root``: ``{name: (pb2, pb2_grpc)}``."""
    if "rayinfra.api.generated" in sys.modules or any(
        m.startswith("rayinfra.api.generated.") for m in sys.modules
    ):
        raise RuntimeError("rayinfra's stubs are loaded in this process: use a subprocess")
    sys.path.insert(0, str(root))
    return {
        key: (importlib.import_module(pb2), importlib.import_module(pb2_grpc))
        for key, (pb2, pb2_grpc) in MODULES.items()
    }


def to_json(message: Any) -> dict[str, Any]:
    """Every field of ``message`` (defaults included) as plain JSON values, ints kept as ints."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        msg_type = field.message_type
        if msg_type is not None and msg_type.GetOptions().map_entry:
            value_field = msg_type.fields_by_name["value"]
            out[field.name] = {
                k: to_json(v) if value_field.message_type is not None else _scalar(v)
                for k, v in value.items()
            }
        elif field.is_repeated:
            out[field.name] = [to_json(v) if msg_type is not None else _scalar(v) for v in value]
        elif msg_type is not None:
            out[field.name] = to_json(value) if message.HasField(field.name) else None
        else:
            out[field.name] = _scalar(value)
    return out


def _scalar(value: Any) -> Any:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.support.original_client", description=__doc__)
    p.add_argument("--target", default="127.0.0.1:50052", help="host:port of the gRPC server")
    p.add_argument("--gen-dir", type=Path, help="already generated client (default: generate now)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-RPC deadline, seconds")
    p.add_argument(
        "--env-target", help="the env-manager's host:port (default: --target, one server for both)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("health", help="OrchestratorService/Health")
    s = sub.add_parser("submit", help="OrchestratorService/SubmitTask")
    s.add_argument("--id", default="")
    s.add_argument("--class", dest="task_class", default="")
    s.add_argument("--payload", nargs="*", default=[], metavar="KEY=VALUE")
    s.add_argument("--priority", type=int, default=0)
    s.add_argument("--workflow-id", default="")
    s = sub.add_parser("status", help="OrchestratorService/GetTaskStatus")
    s.add_argument("--id", required=True)
    s = sub.add_parser("metrics", help="OrchestratorService/GetMetrics")
    s.add_argument("--names", nargs="*", default=[])
    s = sub.add_parser("stream-results", help="OrchestratorService/StreamTaskResults")
    s.add_argument("--ids", nargs="*", default=[])
    s.add_argument("--include-completed", action="store_true")
    s.add_argument("--limit", type=int, default=1, help="stop after this many messages")
    s = sub.add_parser("events", help="OrchestratorService/StreamEvents")
    s.add_argument("--types", nargs="*", default=[])
    s.add_argument("--since", type=int, default=0)
    s.add_argument("--limit", type=int, default=1, help="stop after this many messages")
    s = sub.add_parser(
        "watch", help="StreamTaskResults until the tasks complete or fail, per-message deadline"
    )
    s.add_argument("--ids", nargs="+", required=True)
    s.add_argument("--read-deadline", type=float, default=1.0, help="seconds per message")
    s.add_argument("--max-wait", type=float, default=60.0, help="seconds in all")
    s = sub.add_parser("env-services", help="EnvManagerService/GetServicesStatus")
    s.add_argument("--names", nargs="*", default=[])
    s = sub.add_parser("env-resources", help="EnvManagerService/GetResourceAvailability")
    s.add_argument("--class", dest="workload_class", default="cpu_short")
    s = sub.add_parser("env-execute", help="EnvManagerService/ExecuteTask")
    s.add_argument("--id", default="")
    s.add_argument("--class", dest="workload_class", default="cpu_short")
    s.add_argument("--payload", nargs="*", default=[], metavar="KEY=VALUE")
    s.add_argument("--task-timeout", type=int, default=30)
    s = sub.add_parser("env-health", help="EnvManagerService/StreamHealth")
    s.add_argument("--names", nargs="*", default=[])
    s.add_argument("--limit", type=int, default=1, help="stop after this many messages")
    s = sub.add_parser("decode", help="parse bytes (hex) as an ORIGINAL orchestrator.v1 message")
    s.add_argument("--message", required=True, help="message name, e.g. SubmitTaskRequest")
    s.add_argument("--hex", required=True)
    return p


def _run(args: argparse.Namespace, modules: dict[str, tuple[ModuleType, ModuleType]]) -> Any:
    import grpc  # type: ignore[import-untyped, unused-ignore]

    opb2, opb2_grpc = modules["orchestrator"]
    epb2, epb2_grpc = modules["env_manager"]
    if args.command == "decode":
        msg = getattr(opb2, args.message).FromString(bytes.fromhex(args.hex))
        # fields this layout does not know are kept as unknown fields and re-serialized
        return {"message": to_json(msg), "reserialized_hex": msg.SerializeToString().hex()}
    if args.command == "watch":
        return asyncio.run(_watch(args, opb2, opb2_grpc))
    if args.command.startswith("env-"):
        with grpc.insecure_channel(args.env_target or args.target) as channel:
            return _env(args, channel, epb2, epb2_grpc)
    with grpc.insecure_channel(args.target) as channel:
        orch = opb2_grpc.OrchestratorServiceStub(channel)
        t = args.timeout
        if args.command == "health":
            return to_json(orch.Health(opb2.HealthRequest(), timeout=t))
        if args.command == "submit":
            req = opb2.SubmitTaskRequest(
                id=args.id,
                payload=_kv(args.payload),
                priority=args.priority,
                workflow_id=args.workflow_id,
            )
            setattr(req, "class", args.task_class)  # `class` is a Python keyword
            return to_json(orch.SubmitTask(req, timeout=t))
        if args.command == "status":
            return to_json(
                orch.GetTaskStatus(opb2.GetTaskStatusRequest(task_id=args.id), timeout=t)
            )
        if args.command == "metrics":
            req = opb2.GetMetricsRequest(metric_names=args.names)
            return to_json(orch.GetMetrics(req, timeout=t))
        if args.command == "stream-results":
            req = opb2.StreamTaskResultsRequest(
                task_ids=args.ids, include_completed=args.include_completed
            )
            return _take(orch.StreamTaskResults(req, timeout=t), args.limit)
        if args.command == "events":
            req = opb2.StreamEventsRequest(event_types=args.types, since_timestamp=args.since)
            return _take(orch.StreamEvents(req, timeout=t), args.limit)
    raise SystemExit(f"unknown command {args.command!r}")


def _env(args: argparse.Namespace, channel: Any, epb2: ModuleType, epb2_grpc: ModuleType) -> Any:
    env = epb2_grpc.EnvManagerServiceStub(channel)
    t = args.timeout
    if args.command == "env-services":
        req = epb2.GetServicesStatusRequest(service_names=args.names)
        return to_json(env.GetServicesStatus(req, timeout=t))
    if args.command == "env-resources":
        req = epb2.GetResourceAvailabilityRequest(workload_class=args.workload_class)
        return to_json(env.GetResourceAvailability(req, timeout=t))
    if args.command == "env-execute":
        req = epb2.ExecuteTaskRequest(
            task_id=args.id,
            workload_class=args.workload_class,
            payload=_kv(args.payload),
            timeout_seconds=args.task_timeout,
        )
        return to_json(env.ExecuteTask(req, timeout=t))
    if args.command == "env-health":
        req = epb2.StreamHealthRequest(service_names=args.names)
        return _take(env.StreamHealth(req, timeout=t), args.limit)
    raise SystemExit(f"unknown command {args.command!r}")


async def _watch(args: argparse.Namespace, opb2: ModuleType, opb2_grpc: ModuleType) -> Any:
    """Wait for ``args.ids`` as GoOrchestratorClient did (see the module docstring)."""
    import grpc  # type: ignore[import-untyped, unused-ignore]

    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = opb2_grpc.OrchestratorServiceStub(channel)

        async def stream_task_results(task_ids: list[str]) -> Any:
            request = opb2.StreamTaskResultsRequest(task_ids=task_ids, include_completed=True)
            async for result in stub.StreamTaskResults(request):
                yield to_json(result)

        pending = list(dict.fromkeys(args.ids))
        results: dict[str, dict[str, Any]] = {}
        messages: list[dict[str, Any]] = []
        missed: list[float] = []
        stream = stream_task_results(pending)
        t0 = time.monotonic()
        try:
            while pending:
                if time.monotonic() - t0 > args.max_wait:
                    break
                try:
                    update = await asyncio.wait_for(stream.__anext__(), args.read_deadline)
                except TimeoutError:  # the original `continue`s: its stream is closed now
                    missed.append(round(time.monotonic() - t0, 3))
                    continue
                except StopAsyncIteration:
                    break
                messages.append({"at_s": round(time.monotonic() - t0, 3), **update})
                tid = update["task_id"]
                if tid in pending and str(update["status"]).lower() in ("completed", "failed"):
                    results[tid] = update
                    pending.remove(tid)
        finally:
            await stream.aclose()
    gaps = [b["at_s"] - a["at_s"] for a, b in itertools.pairwise(messages)]
    return {
        "results": {
            tid: results.get(tid, {"task_id": tid, "status": "timeout"})
            for tid in dict.fromkeys(args.ids)
        },
        "messages": messages,
        "deadlines_missed_at_s": missed,
        "max_gap_s": round(max(gaps), 3) if gaps else None,
    }


def _take(stream: Any, limit: int) -> list[dict[str, Any]]:
    out = []
    try:
        for msg in stream:
            out.append(to_json(msg))
            if len(out) >= limit:
                break
    finally:
        stream.cancel()
    return out


def main(argv: list[str] | None = None) -> int:
    import grpc  # type: ignore[import-untyped, unused-ignore]

    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="original-client-") as tmp:
        root = args.gen_dir if args.gen_dir is not None else generate_original_client(tmp)
        modules = load_original_modules(root)
        try:
            result: Any = _run(args, modules)
            code = 0
        except grpc.RpcError as e:
            result = {"rpc_error": {"code": e.code().name, "details": e.details()}}
            code = 2
    reply = {
        "result": result,
        "modules": {k: (pb2.__name__, pb2.DESCRIPTOR.name) for k, (pb2, _) in modules.items()},
        "rayinfra_imported": any(m == "rayinfra" or m.startswith("rayinfra.") for m in sys.modules),
    }
    print(json.dumps(reply, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())

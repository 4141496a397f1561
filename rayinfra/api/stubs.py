"""Lazy access to the generated gRPC/protobuf stubs (``rayinfra.api.generated``).

Nothing in ``rayinfra`` imports the generated modules at import time: only the gRPC gateway and
the gRPC client path call these accessors. That keeps ``import rayinfra`` light, and a process that
loads a separately generated ``orchestrator.v1`` client (the original layout) can still use
rayinfra's actor-handle client without a "duplicate symbol" clash in protobuf's default pool.

    pb2, pb2_grpc = stubs.orchestrator()
    stub = pb2_grpc.OrchestratorServiceStub(channel)
    reply = await stub.Health(pb2.HealthRequest())

For static types use the module attributes ``stubs.orchestrator_pb2`` / ``stubs.env_manager_pb2``
(imported on first access; mypy sees the protoc ``--pyi_out`` stubs), e.g.
``req = stubs.orchestrator_pb2.SubmitTaskRequest(id="t1")``. The ``*_pb2_grpc`` modules are
untyped (grpc ships no type information), so they are only handed out as ``ModuleType``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayinfra.api.generated import env_manager_v1_pb2 as env_manager_pb2
    from rayinfra.api.generated import orchestrator_v1_pb2 as orchestrator_pb2

__all__ = [
    "ENV_MANAGER_SERVICE",
    "GENERATED_PACKAGE",
    "ORCHESTRATOR_SERVICE",
    "env_manager",
    "env_manager_pb2",
    "orchestrator",
    "orchestrator_pb2",
]

GENERATED_PACKAGE = "rayinfra.api.generated"
ORCHESTRATOR_SERVICE = "orchestrator.v1.OrchestratorService"  # full service names (method paths)
ENV_MANAGER_SERVICE = "env_manager.v1.EnvManagerService"

_LAZY_PB2 = {"orchestrator_pb2": "orchestrator_v1_pb2", "env_manager_pb2": "env_manager_v1_pb2"}


def _load(stem: str) -> tuple[ModuleType, ModuleType]:
    pb2 = importlib.import_module(f"{GENERATED_PACKAGE}.{stem}_pb2")
    pb2_grpc = importlib.import_module(f"{GENERATED_PACKAGE}.{stem}_pb2_grpc")
    return pb2, pb2_grpc


def orchestrator() -> tuple[ModuleType, ModuleType]:
    """``(orchestrator_v1_pb2, orchestrator_v1_pb2_grpc)``: package ``orchestrator.v1``."""
    return _load("orchestrator_v1")


def env_manager() -> tuple[ModuleType, ModuleType]:
    """``(env_manager_v1_pb2, env_manager_v1_pb2_grpc)``: package ``env_manager.v1``."""
    return _load("env_manager_v1")


if not TYPE_CHECKING:

    def __getattr__(name: str) -> ModuleType:
        """PEP 562: ``stubs.orchestrator_pb2`` / ``stubs.env_manager_pb2`` import on first use."""
        module = _LAZY_PB2.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = importlib.import_module(f"{GENERATED_PACKAGE}.{module}")
        globals()[name] = value
        return value

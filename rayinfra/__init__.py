"""rayinfra: a cluster runtime on Ray — services, adaptive task scheduling and Slurm in one package.

Importing rayinfra costs next to nothing: the public names below are imported on first use, and
nothing here imports Ray, grpc, fastapi or docker. Importing rayinfra before ``ray`` makes a
later ``import ray`` in this process see ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (local mode's
loopback-only head). When ``ray`` was imported first, :func:`rayinfra.runtime.connect` refreshes
Ray's cached settings instead.
"""

from __future__ import annotations

import importlib
import os as _os
import sys as _sys
import warnings
from typing import TYPE_CHECKING, Any

from rayinfra._version import __version__

if "ray" not in _sys.modules and not _os.environ.get("RAY_ADDRESS"):
    _os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

if TYPE_CHECKING:
    from rayinfra.client import ActorTransport, AgentInfra, AgentInfraSync, GrpcTransport, connect
    from rayinfra.config import ConfigError, RayinfraConfig, load_config
    from rayinfra.connection import ConnectionInfo
    from rayinfra.errors import InvalidArgumentError, TaskNotFoundError
    from rayinfra.hardware import HardwareInfo
    from rayinfra.hardware import detect as detect_hardware

_MODULES = {  # module -> the public names it provides
    "rayinfra.client": (
        "AgentInfra",
        "AgentInfraSync",
        "ActorTransport",
        "GrpcTransport",
        "connect",
    ),
    "rayinfra.config": ("ConfigError", "RayinfraConfig", "load_config"),
    "rayinfra.connection": ("ConnectionInfo",),
    "rayinfra.errors": ("InvalidArgumentError", "TaskNotFoundError"),
    "rayinfra.hardware": ("HardwareInfo", "detect_hardware"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
#: old public names -> their new names (still work, with a DeprecationWarning)
_DEPRECATED = {"TaskNotFound": "TaskNotFoundError", "InvalidArgument": "InvalidArgumentError"}

__all__ = [
    "ActorTransport",
    "AgentInfra",
    "AgentInfraSync",
    "ConfigError",
    "ConnectionInfo",
    "GrpcTransport",
    "HardwareInfo",
    "InvalidArgumentError",
    "RayinfraConfig",
    "TaskNotFoundError",
    "__version__",
    "connect",
    "detect_hardware",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(
            f"rayinfra.{name} is deprecated; use rayinfra.{new}", DeprecationWarning, stacklevel=2
        )
        name = new
    if name not in _WHERE:
        raise AttributeError(f"module 'rayinfra' has no attribute {name!r}")
    attr = "detect" if name == "detect_hardware" else name
    value = getattr(importlib.import_module(_WHERE[name]), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *_DEPRECATED])

"""rayinfra: a cluster runtime on Ray — services, adaptive task scheduling and Slurm in one package.

Importing rayinfra before ``ray`` makes a later ``import ray`` in this process see
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (local mode's loopback-only head). When ``ray`` was imported
first, :func:`rayinfra.runtime.connect` refreshes Ray's cached settings instead.
"""

from __future__ import annotations

import os as _os
import sys as _sys

__version__ = "0.1.0"

if "ray" not in _sys.modules and not _os.environ.get("RAY_ADDRESS"):
    _os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from rayinfra.client import AgentInfra, AgentInfraSync
from rayinfra.config import ConfigError, RayinfraConfig, load_config
from rayinfra.connection import ConnectionInfo
from rayinfra.errors import TaskNotFound
from rayinfra.hardware import HardwareInfo
from rayinfra.hardware import detect as detect_hardware
from rayinfra.scheduling.tasks import InvalidArgument

__all__ = [
    "AgentInfra",
    "AgentInfraSync",
    "ConfigError",
    "ConnectionInfo",
    "HardwareInfo",
    "InvalidArgument",
    "RayinfraConfig",
    "TaskNotFound",
    "__version__",
    "detect_hardware",
    "load_config",
]

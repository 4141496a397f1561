"""Control actors: thin Ray actor shells around plain-Python logic.

The classes are imported on demand (:func:`control_actor_classes`): they pull in the gateway's
servers and the service drivers, which a client or the CLI never needs.
"""

from __future__ import annotations

import importlib

from rayinfra.actors.base import ControlActor
from rayinfra.config import CONTROL_ACTOR_NAMES

_CLASSES = {
    "scheduler": "rayinfra.actors.scheduler:SchedulerActor",
    "service_registry": "rayinfra.actors.services:ServiceRegistryActor",
    "health_checker": "rayinfra.actors.health:HealthCheckerActor",
    "event_bus": "rayinfra.actors.event_bus:EventBusActor",
    "workflows": "rayinfra.actors.workflows:WorkflowsActor",
    "gateway": "rayinfra.actors.gateway:GatewayActor",
}


def control_actor_classes() -> dict[str, type[ControlActor]]:
    """name -> class, in start order (``CONTROL_ACTOR_NAMES``: the gateway last)."""
    out: dict[str, type[ControlActor]] = {}
    for name in CONTROL_ACTOR_NAMES:
        module, _, attr = _CLASSES[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert name == cls.NAME, (cls, name)
        out[name] = cls
    return out


__all__ = ["ControlActor", "control_actor_classes"]

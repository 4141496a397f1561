"""Control actors: thin Ray actor shells around plain-Python logic."""

from __future__ import annotations

from rayinfra.actors.base import ControlActor
from rayinfra.actors.gateway import GatewayActor
from rayinfra.actors.health import HealthCheckerActor
from rayinfra.actors.scheduler import SchedulerActor
from rayinfra.actors.services import ServiceRegistryActor

#: name -> class, in start order (the gateway last: it fronts the others)
CONTROL_ACTORS: dict[str, type[ControlActor]] = {
    cls.NAME: cls
    for cls in (SchedulerActor, ServiceRegistryActor, HealthCheckerActor, GatewayActor)
}

__all__ = ["CONTROL_ACTORS", "ControlActor"]

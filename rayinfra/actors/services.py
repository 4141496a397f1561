"""The ``service_registry`` control actor: desired service state and reconcile loop (issue: service manager).

Today it carries what every control actor has (:class:`~rayinfra.actors.base.ControlActor`):
config, state store, lifecycle events, its change feed and ping.
"""

from __future__ import annotations

from rayinfra.actors.base import ControlActor


class ServiceRegistryActor(ControlActor):
    NAME = "service_registry"

"""The ``health_checker`` control actor: service probes and restart-on-unhealthy (issue: service manager).

Today it carries what every control actor has (:class:`~rayinfra.actors.base.ControlActor`):
config, state store, lifecycle events, its change feed and ping.
"""

from __future__ import annotations

from rayinfra.actors.base import ControlActor


class HealthCheckerActor(ControlActor):
    NAME = "health_checker"

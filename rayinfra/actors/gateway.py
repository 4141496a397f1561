"""The ``gateway`` control actor: gRPC and HTTP servers, translating to the other actors (issue: gateway).

Today it carries what every control actor has (:class:`~rayinfra.actors.base.ControlActor`):
config, state store, lifecycle events, its change feed and ping.
"""

from __future__ import annotations

from rayinfra.actors.base import ControlActor


class GatewayActor(ControlActor):
    NAME = "gateway"

"""The ``scheduler`` control actor: task queue, limiter and dispatch (issue: scheduler).

Today it carries what every control actor has (:class:`~rayinfra.actors.base.ControlActor`):
config, state store, lifecycle events, its change feed and ping.
"""

from __future__ import annotations

from rayinfra.actors.base import ControlActor


class SchedulerActor(ControlActor):
    NAME = "scheduler"

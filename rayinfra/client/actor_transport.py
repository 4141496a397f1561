"""The client's primitives over Ray actor handles (this process is a driver of the runtime's
Ray cluster, or runs inside it): a :class:`~rayinfra.control.ControlPlane`, the same one the
gateway serves from. Every call retries across a scheduler restart for up to ``retry_for_s``
(``DSPY_AGENT_SERVICE_TIMEOUT``): submits are idempotent by task id."""

from __future__ import annotations

from rayinfra import raywrap
from rayinfra.control import ControlPlane


class ActorTransport(ControlPlane):
    def __init__(self, *, retry_for_s: float = 60.0, backoff_s: float = 2.0) -> None:
        super().__init__(raywrap.ActorCaller(retry_for_s=retry_for_s, backoff_s=backoff_s))

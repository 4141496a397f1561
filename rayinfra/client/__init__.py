"""The Python client: :class:`AgentInfra` over a :class:`Transport`.

``ActorTransport`` talks to the control actors through Ray handles (this process joins the
runtime's Ray cluster); ``GrpcTransport`` talks to the gateway. :func:`connect` picks one.
``ServicesClient`` drives the service manager through the gateway's env_manager.v1.
Names are imported on first use, so ``import rayinfra.client`` loads neither Ray nor grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayinfra.client.actor_transport import ActorTransport
    from rayinfra.client.agentinfra import AgentInfra, AgentInfraSync
    from rayinfra.client.discovery import connect
    from rayinfra.client.grpc_transport import GrpcTransport
    from rayinfra.client.services import ServicesClient
    from rayinfra.client.transport import Transport

_WHERE = {
    "AgentInfra": "rayinfra.client.agentinfra",
    "AgentInfraSync": "rayinfra.client.agentinfra",
    "ActorTransport": "rayinfra.client.actor_transport",
    "GrpcTransport": "rayinfra.client.grpc_transport",
    "ServicesClient": "rayinfra.client.services",
    "Transport": "rayinfra.client.transport",
    "connect": "rayinfra.client.discovery",
}

__all__ = [
    "ActorTransport",
    "AgentInfra",
    "AgentInfraSync",
    "GrpcTransport",
    "ServicesClient",
    "Transport",
    "connect",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rayinfra.client' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

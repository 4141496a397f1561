"""Clients of a running runtime's gateway over real loopback gRPC and HTTP (both services)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import ray

from rayinfra.api import stubs
from rayinfra.config import NAMESPACE, dial_addr

if TYPE_CHECKING:
    from tests.integration.conftest import Runtime


@dataclass
class Clients:
    rt: Runtime
    orch: Any  # OrchestratorServiceStub
    env: Any  # EnvManagerServiceStub
    channels: list[grpc.Channel] = field(default_factory=list)  # orchestrator, env-manager

    @property
    def payload_limit(self) -> int:
        return int(self.rt.config.scheduler.payload_limit_bytes)

    @property
    def max_request(self) -> int:
        return int(self.rt.config.gateway.max_request_bytes)

    def local_token(self) -> str:
        """The gateway token file's token: a trusted caller."""
        return self.rt.config.gateway_token_path.read_text().strip()

    def addr(self, key: str) -> str:
        """Where to dial the server of ``gateway.<key>`` (``orchestrator_http_addr``, ...)."""
        return dial_addr(getattr(self.rt.config.gateway, key))

    def http(self, key: str = "orchestrator_http_addr") -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.addr(key)}", timeout=30)


@contextmanager
def gateway_clients(rt: Runtime, options: Sequence[tuple[str, Any]] = ()) -> Iterator[Clients]:
    """Stubs on one channel per gRPC service of ``rt``'s gateway, once all its servers serve."""
    servers = ray.get(ray.get_actor("gateway", namespace=NAMESPACE).serving.remote())
    assert all(v.startswith("serving") for v in servers.values()), servers
    _, opb_grpc = stubs.orchestrator()
    _, epb_grpc = stubs.env_manager()
    gw = rt.config.gateway
    orch_ch = grpc.insecure_channel(dial_addr(gw.orchestrator_grpc_addr), options=list(options))
    env_ch = grpc.insecure_channel(dial_addr(gw.env_manager_grpc_addr), options=list(options))
    try:
        yield Clients(
            rt=rt,
            orch=opb_grpc.OrchestratorServiceStub(orch_ch),
            env=epb_grpc.EnvManagerServiceStub(env_ch),
            channels=[orch_ch, env_ch],
        )
    finally:
        for ch in (orch_ch, env_ch):
            ch.close()

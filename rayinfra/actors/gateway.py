"""The ``gateway`` control actor: the documented gRPC and HTTP APIs in front of the other actors.

It serves, on its own event loop: ``orchestrator.v1.OrchestratorService`` (+ gRPC health and
reflection) on ``gateway.orchestrator_grpc_addr`` (:50052), ``env_manager.v1.EnvManagerService``
on ``gateway.env_manager_grpc_addr`` (:50100), the orchestrator HTTP API on
``gateway.orchestrator_http_addr`` (:9097) and the env-manager's ``/health`` and ``/metrics`` on
``gateway.env_manager_http_addr`` (:50101). It translates, and keeps no state of its own:
submits are admitted here (the one :class:`~rayinfra.admission.Submitter`, on the shared state
store), which wakes the scheduler through its doorbell; everything else is a call to an actor
through a :class:`~rayinfra.control.ControlPlane`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayinfra import doorbell, hardware, raywrap, runtime
from rayinfra.actors.base import ControlActor
from rayinfra.actors.slurm_pool import SlurmGate
from rayinfra.admission import Submitter
from rayinfra.api import stubs
from rayinfra.api.auth import Auth, read_or_create_token
from rayinfra.api.fanout import Fanout
from rayinfra.api.grpc_common import AuthInterceptor
from rayinfra.api.grpc_env_manager import EnvManagerServicer, health_feed
from rayinfra.api.grpc_orchestrator import OrchestratorServicer, event_feed, task_feed
from rayinfra.api.http import env_manager_app, orchestrator_app
from rayinfra.api.limits import ClientLimiter, LimitSettings
from rayinfra.config import RayinfraConfig, parse_listen_addr
from rayinfra.connection import ConnectionInfo, read_connection
from rayinfra.control import ControlPlane
from rayinfra.errors import UnavailableError
from rayinfra.single_flight import SharedCalls

log = logging.getLogger(__name__)

GRPC_GRACE_S = 2.0


def token_path(config: RayinfraConfig) -> Path:
    return config.gateway_token_path


class GatewayActor(ControlActor):
    NAME = "gateway"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        gw = self.config.gateway
        local_token = read_or_create_token(token_path(self.config))
        self.auth = Auth(
            required=gw.auth_required(),
            token=gw.auth_token or local_token,
            local_token=local_token,
            allow_untrusted_code=gw.allow_untrusted_code,
        )
        # one budget per client across the four servers (rayinfra.api.limits)
        self.limits = ClientLimiter(LimitSettings.of(gw))
        self._bell = doorbell.Bell(doorbell.address(self.config.state.db_path, "scheduler"))
        self.control = ControlPlane(
            raywrap.ActorCaller(),
            Submitter(self.store, self.config, self._bell.ring_soon, slurm=SlurmGate(self.config)),
        )
        self.feeds: dict[str, Fanout] = {
            "tasks": task_feed(self.control),
            "events": event_feed(self.control),
            "health": health_feed(self.control),
        }
        self.servers: dict[str, str] = {}  # name -> "serving" or the error that stopped it
        self._status: SharedCalls[dict[str, Any]] = SharedCalls()  # see runtime_status
        self._grpc: list[Any] = []
        self._http: list[Any] = []
        self._ready = asyncio.get_running_loop().create_task(self._serve())

    # ------------------------------------------------------------------ serving
    async def _serve(self) -> None:
        gw = self.config.gateway
        if not gw.enabled:
            return
        await self._serve_grpc("orchestrator_grpc", gw.orchestrator_grpc_addr, orchestrator=True)
        await self._serve_grpc("env_manager_grpc", gw.env_manager_grpc_addr, orchestrator=False)
        await self._serve_http(
            "orchestrator_http",
            gw.orchestrator_http_addr,
            orchestrator_app(
                self.control, self.auth, max_request_bytes=gw.max_request_bytes, limits=self.limits
            ),
        )
        await self._serve_http(
            "env_manager_http",
            gw.env_manager_http_addr,
            env_manager_app(
                self.control, self.auth, max_request_bytes=gw.max_request_bytes, limits=self.limits
            ),
        )

    async def _serve_grpc(self, name: str, addr: str, *, orchestrator: bool) -> None:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        gw = self.config.gateway
        try:
            server = grpc.aio.server(
                interceptors=[AuthInterceptor(self.auth, self.limits)],
                options=[
                    ("grpc.so_reuseport", 0),
                    ("grpc.max_receive_message_length", gw.max_request_bytes),
                ],
            )
            health_servicer = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            if orchestrator:
                _, pb2_grpc = stubs.orchestrator()
                pb2_grpc.add_OrchestratorServiceServicer_to_server(
                    OrchestratorServicer(
                        self.control,
                        self.auth,
                        self.feeds["tasks"],
                        self.feeds["events"],
                        self.runtime_status,
                        settings=gw,
                    ),
                    server,
                )
                full = stubs.ORCHESTRATOR_SERVICE
            else:
                _, pb2_grpc = stubs.env_manager()
                pb2_grpc.add_EnvManagerServiceServicer_to_server(
                    EnvManagerServicer(
                        self.control,
                        self.auth,
                        self.feeds["health"],
                        hardware.detect,
                        list(self.config.classes),
                        self.actor_log,
                        settings=gw,
                    ),
                    server,
                )
                full = stubs.ENV_MANAGER_SERVICE
            reflection.enable_server_reflection(
                (full, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            host, port = parse_listen_addr(addr)
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if gw.tls_cert_file and gw.tls_key_file:
                creds = grpc.ssl_server_credentials(
                    [(Path(gw.tls_key_file).read_bytes(), Path(gw.tls_cert_file).read_bytes())]
                )
                bound = server.add_secure_port(target, creds)
            else:
                bound = server.add_insecure_port(target)
            if bound != port:
                raise RuntimeError(f"could not bind {target}")
            await server.start()
            serving = health_pb2.HealthCheckResponse.SERVING
            await health_servicer.set(full, serving)
            await health_servicer.set("", serving)
            self._grpc.append(server)
            self.servers[name] = f"serving on {target}"
        except Exception as e:
            log.exception("gateway: %s on %s failed", name, addr)
            self.servers[name] = f"failed on {addr}: {e}"

    async def _serve_http(self, name: str, addr: str, app: Any) -> None:
        import uvicorn

        gw = self.config.gateway
        host, port = parse_listen_addr(addr)
        try:
            cfg = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                access_log=False,
                ssl_certfile=str(gw.tls_cert_file) if gw.tls_cert_file else None,
                ssl_keyfile=str(gw.tls_key_file) if gw.tls_key_file else None,
            )
            # Bind here: uvicorn answers a busy port with sys.exit, which would escape the task
            # and stop this actor's event loop.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            sock.listen(2048)
            sock.setblocking(False)
            server = uvicorn.Server(cfg)
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if task.done():
                raise RuntimeError(f"could not serve {host}:{port}: {task.exception()!r}")
            self._http.append((server, task))
            self.servers[name] = f"serving on {host}:{port}"
        except Exception as e:  # reported by ping/servers, the others still run
            log.exception("gateway: %s on %s failed", name, addr)
            self.servers[name] = f"failed on {addr}: {e}"

    async def submit(
        self, specs: list[dict[str, Any]], trusted: bool = True, source: str = "client"
    ) -> list[str]:
        """Admit a batch for a client over actor handles (``ActorTransport``), as a gRPC
        SubmitTasks would: validated, committed, the scheduler's doorbell rung. The batch's
        task ids in order (:meth:`ControlPlane.admit`)."""
        return await self.control.admit(specs, trusted, source)

    async def runtime_status(self, services: list[str] | None = None) -> dict[str, Any]:
        """What ``rayinfra status`` shows (:func:`rayinfra.runtime.live_status`), gathered here:
        this actor is in the cluster already, so a client needs no Ray driver of its own."""
        key = tuple(services or ())

        async def gather() -> dict[str, Any]:
            info = await asyncio.to_thread(self._connection)  # a file read: off the loop
            return await runtime.live_status(self.config, info, key, caller=self.control.caller)

        # callers at the same time share one answer (read-only: GetRuntimeStatus encodes it,
        # a caller over Ray gets its own copy)
        return await self._status.get(key, gather)

    def actor_log(self, name: str, tail: int, follow: bool) -> Iterator[str]:
        """A runtime actor's log lines for StreamLogs (blocking: called by a thread): this
        actor is in the cluster, so ``rayinfra logs scheduler`` needs no Ray driver."""
        return raywrap.actor_log(self._connection().gcs_address, name, tail=tail, follow=follow)

    def _connection(self) -> ConnectionInfo:
        info = read_connection(self.config.state.dir)
        if info is None:
            raise UnavailableError(f"no runtime is recorded in {self.config.state.dir}")
        return info

    # ------------------------------------------------------------------ introspection
    async def ping(self) -> dict[str, Any]:
        out = await super().ping()
        out["servers"] = dict(self.servers)
        return out

    async def serving(self) -> dict[str, str]:
        """Each server and its state, once all have tried to start."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._ready)
        return dict(self.servers)

    async def watchers(self) -> dict[str, Any]:
        """Open streams per feed and whether each feed polls (leak checks)."""
        return {
            "subscribers": {n: f.subscribers for n, f in self.feeds.items()},
            "polling": {n: f.polling for n, f in self.feeds.items()},
            "tasks": len(asyncio.all_tasks()),
        }

    async def shutdown(self) -> bool:
        for server in self._grpc:
            with contextlib.suppress(Exception):
                await server.stop(GRPC_GRACE_S)
        for server, task in self._http:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5.0)
        for feed in self.feeds.values():
            await feed.close()
        self._bell.close()
        return await super().shutdown()

"""Which transport a client uses, and starting a runtime when none runs.

:func:`connect` decides, in this order:

1. an explicit gateway address (``orchestrator_addr=``, ``RAYINFRA_GATEWAY``) -> gRPC;
2. an explicit Ray address (``RAYINFRA_ADDRESS``) -> actor handles in that cluster;
3. a runtime recorded in the state dir's ``connection.json``: actor handles when this process
   already runs in its Ray cluster (a task or an actor) or its gateway is disabled; else gRPC to
   its gateway;
4. a gateway answering at ``ORCHESTRATOR_GRPC_ADDR`` (another user's or host's runtime) -> gRPC;
5. none of these: start the local runtime (unless ``DSPY_AGENT_SKIP_START``) in a child process
   (:mod:`rayinfra.client.runtime_child`) and use its gateway; in-process with actor handles
   only when the gateway is disabled.

Why a client outside the cluster is not a Ray driver: Ray ends a driver's process 60 s after
its cluster's GCS is gone (``gcs_rpc_server_reconnect_timeout_s``), so a client that was a
driver would die with a crashed runtime and could never reconnect. Over the gateway it is a
plain gRPC client: it waits out a crash and a ``rayinfra start`` (bounded back-off, a log line
per attempt), and its pending waits and streams go on from the durable task feed.

Blocking (``ray.init``, a child process): run it off the event loop, or on the main thread.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rayinfra import connection
from rayinfra.client.transport import Transport
from rayinfra.config_sources import DialSettings, as_dial, dial_addr

if TYPE_CHECKING:
    from rayinfra.config import RayinfraConfig

CHILD_TIMEOUT_S = 180.0


@dataclass
class Connection:
    transport: Transport
    #: stops the runtime this connection started (blocking), ``None`` if it started none
    stop_runtime: Callable[[], None] | None = None


def connect(
    config: RayinfraConfig | None = None,
    *,
    orchestrator_addr: str | None = None,
    workspace: Path | None = None,
    cli_path: Path | None = None,
) -> Connection:
    """The transport to this config's runtime (default: the config from the environment, as
    ``load_config`` resolves it), starting one if none runs; open it with ``await
    conn.transport.open()`` or pass it to ``AgentInfra(transport=...)``."""
    from rayinfra import runtime  # a Ray driver's business: not loaded for gRPC clients
    from rayinfra.config import load_config

    config = config or load_config().config
    client = config.client
    addr = orchestrator_addr or client.orchestrator_addr
    if addr is not None:
        return _to_gateway(config, addr, workspace, cli_path)
    if client.ray_address is not None:
        runtime.attach(config, client.ray_address)
        return Connection(actor_transport(config))
    info = connection.recorded(config.state.dir)
    if info is not None:
        if config.gateway.enabled and not _runs_in(info):
            return Connection(
                grpc_transport(config, _local_gateway(config), client.service_timeout_s)
            )
        runtime.connect(config.state.dir)
        return Connection(actor_transport(config))
    dial = config.orchestrator_dial_addr
    if listening(dial, client.connect_timeout_s):
        return Connection(grpc_transport(config, dial))
    if client.skip_start:
        raise runtime.RuntimeFailureError(
            f"rayinfra is not running (state dir {config.state.dir}) and "
            "DSPY_AGENT_SKIP_START is set"
        )
    if config.gateway.enabled:
        return _to_gateway(config, _local_gateway(config), workspace, cli_path)
    runtime.start(config)
    runtime.connect(config.state.dir)

    def stop_local() -> None:
        runtime.stop(config.state.dir, force=True)

    return Connection(actor_transport(config), stop_local)


def _runs_in(info: connection.ConnectionInfo) -> bool:
    """Whether this process is already part of the recorded runtime's Ray cluster (a task or
    an actor in it, or a driver that connected on its own)."""
    if "ray" not in sys.modules:  # never imported: not in any cluster
        return False
    from rayinfra import raywrap

    return raywrap.connected_address() == info.gcs_address


def _local_gateway(config: RayinfraConfig) -> str:
    return dial_addr(config.gateway.orchestrator_grpc_addr)


def _to_gateway(
    config: RayinfraConfig, addr: str, workspace: Path | None, cli_path: Path | None
) -> Connection:
    """gRPC to ``addr``; with nothing listening there, start the local runtime in a child
    process if it would serve ``addr``."""
    from rayinfra import runtime
    from rayinfra.client import runtime_child

    client = config.client
    if listening(addr, client.connect_timeout_s):
        return Connection(grpc_transport(config, addr))
    local = _local_gateway(config)
    if client.skip_start:
        raise runtime.RuntimeFailureError(
            f"no gateway answered at {addr} within {client.connect_timeout_s:g}s and "
            "DSPY_AGENT_SKIP_START is set"
        )
    if addr != local:
        raise runtime.RuntimeFailureError(
            f"no gateway answered at {addr} within {client.connect_timeout_s:g}s (a "
            f"runtime started here would serve {local}, so none was started)"
        )
    cli = cli_path or client.cli_path
    try:
        runtime_child.run(
            "start",
            config,
            timeout_s=max(client.service_timeout_s, CHILD_TIMEOUT_S),
            workspace=workspace,
            cli_path=cli,
        )
    except runtime_child.RuntimeChildError as e:
        raise runtime.RuntimeFailureError(str(e)) from None

    def stop() -> None:
        runtime_child.run("stop", config, timeout_s=CHILD_TIMEOUT_S, cli_path=cli)

    # a runtime started just now may still be binding its servers
    return Connection(grpc_transport(config, addr, client.service_timeout_s), stop)


def actor_transport(config: RayinfraConfig) -> Transport:
    from rayinfra.client.actor_transport import ActorTransport

    return ActorTransport(
        retry_for_s=config.client.service_timeout_s, backoff_s=config.client.reconnect_backoff_s
    )


def grpc_transport(
    config: RayinfraConfig | DialSettings, addr: str, connect_timeout_s: float | None = None
) -> Transport:
    """A :class:`GrpcTransport` to ``addr`` with this config's token, TLS CA and timeouts."""
    from rayinfra.client.grpc_transport import GrpcTransport

    dial = as_dial(config)
    token, tls_ca = gateway_credentials(dial)
    return GrpcTransport(
        addr,
        token=token,
        tls_ca=tls_ca,
        connect_timeout_s=connect_timeout_s or dial.connect_timeout_s,
        retry_for_s=dial.service_timeout_s,
        backoff_s=dial.reconnect_backoff_s,
    )


def gateway_credentials(config: RayinfraConfig | DialSettings) -> tuple[str | None, bytes | None]:
    """``(token, tls_ca)`` for a client of this config's gateway (either gRPC service): the
    configured auth token, else the local gateway token file's (``None`` if neither); the TLS CA
    (PEM) from ``client.tls_ca_file``, else ``gateway.tls_cert_file`` (``None``: plaintext).
    An unreadable CA file is :class:`~rayinfra.runtime.RuntimeFailureError`."""
    dial = as_dial(config)
    token = dial.auth_token or _read_token(dial.token_path)
    ca_file = dial.tls_ca_file
    try:
        return token, ca_file.read_bytes() if ca_file is not None else None
    except OSError as e:
        from rayinfra import runtime

        raise runtime.RuntimeFailureError(f"cannot read the TLS CA file {ca_file}: {e}") from None


def listening(addr: str, timeout_s: float) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None

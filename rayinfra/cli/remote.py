"""How CLI commands reach a running runtime: a client over the gateway's gRPC, never a Ray driver.

Joining the cluster as a driver costs a second or two and a Ray import; a gRPC call to the
gateway costs milliseconds. Only ``start``, ``stop`` (and, later, ``join``) must be Ray drivers;
they say so in their help. The gateway is the configured one (``RAYINFRA_GATEWAY``, else the
dial address of ``gateway.orchestrator_grpc_addr``); the local token file is sent as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rayinfra.cli.common import EXIT_FAILURE, EXIT_USAGE, dial, fail
from rayinfra.config_sources import DialSettings
from rayinfra.connection import recorded
from rayinfra.errors import InvalidArgumentError, TaskNotFoundError, WorkflowNotFoundError

if TYPE_CHECKING:
    from rayinfra.client import AgentInfraSync


def gateway_addr(settings: DialSettings) -> str | None:
    """Where this config's runtime answers gRPC; ``None`` when no runtime is recorded here and
    no gateway was named (nothing runs: say so without dialling)."""
    if settings.gateway_addr is None and recorded(settings.state_dir) is None:
        return None
    return settings.orchestrator_dial_addr


@contextlib.contextmanager
def session(settings: DialSettings) -> Iterator[AgentInfraSync]:
    """A client of the runtime through its gateway (never starting one); request errors become
    exit codes (2: bad input, 1: not found / not running / failed); always closed."""
    from rayinfra.client import AgentInfraSync
    from rayinfra.client.discovery import grpc_transport, listening

    addr = gateway_addr(settings)
    if addr is None:
        fail(f"rayinfra is not running (state dir {settings.state_dir})", EXIT_FAILURE)
    if not listening(addr, settings.connect_timeout_s):
        fail(
            f"rayinfra's gateway does not answer at {addr} (is the runtime running, with "
            "gateway.enabled?)",
            EXIT_FAILURE,
        )
    try:
        infra = AgentInfraSync(transport=grpc_transport(settings, addr)).start()
    except (ConnectionError, RuntimeError) as e:
        fail(str(e), EXIT_FAILURE)
    try:
        yield infra
    except typer.Exit:
        raise
    except InvalidArgumentError as e:
        fail(str(e), EXIT_USAGE)
    except (TaskNotFoundError, WorkflowNotFoundError, RuntimeError) as e:
        fail(str(e), EXIT_FAILURE)
    finally:
        infra.stop()


def session_for(
    config: Path | None, state_dir: Path | None
) -> contextlib.AbstractContextManager[AgentInfraSync]:
    """:func:`session` with the runtime that ``--config`` and ``--state-dir`` name."""
    return session(dial(config, state_dir))

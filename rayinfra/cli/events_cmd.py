"""``rayinfra events tail``: the runtime's events, from the gateway's StreamEvents (gRPC).

The same feed the event bus publishes to Kafka (the state store's events table). A gRPC client
of the gateway, never a Ray driver, and no pydantic: it starts as fast as ``task list``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import typer

from rayinfra.cli import remote
from rayinfra.cli.common import EXIT_FAILURE, EXIT_USAGE, ConfigOption, StateDirOption, dial, fail
from rayinfra.errors import InvalidArgumentError

app = typer.Typer(
    help="The runtime's events (the feed the event bus sends to Kafka).", no_args_is_help=True
)

REPLAY_IDLE_S = 1.0
"""Without --follow: the replay is over once the stream has been quiet this long."""
DEFAULT_SINCE = "10m"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*")
SINCE_FORM = "a duration like 30s, 10m, 2h or 1d (a bare number is seconds; 0: only new events)"
TYPE_FORM = "an event type such as task_completed or service_healthy (lowercase, digits, _)"


def parse_since(text: str) -> float:
    """``"10m"`` -> 600.0; ``ValueError`` naming the valid form."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"--since {text!r}: expected {SINCE_FORM}")
    return float(m[1]) * _UNIT_S[m[2]]


def check_types(types: list[str]) -> list[str]:
    for t in types:
        if not _EVENT_TYPE.fullmatch(t):
            raise ValueError(f"--type {t!r}: expected {TYPE_FORM}")
    return list(dict.fromkeys(types))


def format_line(ev: dict[str, Any]) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ev["timestamp"]))
    data = json.dumps(ev["data"], separators=(",", ":"), sort_keys=True, default=str)
    return f"{ts} {ev['event_type']} {ev['resource_id'] or '-'} {data}"


async def _tail(
    transport: Any, types: list[str], since_ts: int, follow: bool, as_json: bool
) -> None:
    """Print the stream: the replay from ``since_ts`` (0: none), then, with ``follow``, live
    events until interrupted; without it, stop once the replay is over (an event newer than the
    command's start, or the stream quiet for :data:`REPLAY_IDLE_S`)."""
    started = int(time.time())
    await transport.open()
    stream = transport.events(types or None, since_ts)
    try:
        while True:
            try:
                ev = await asyncio.wait_for(stream.__anext__(), None if follow else REPLAY_IDLE_S)
            except (StopAsyncIteration, asyncio.TimeoutError):
                return
            if not follow and ev["timestamp"] > started:
                return
            line = (
                json.dumps(ev, separators=(",", ":"), default=str) if as_json else format_line(ev)
            )
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    finally:
        await stream.aclose()
        await transport.close()


@app.command("tail")
def tail(
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new events until interrupted."
    ),
    types: list[str] = typer.Option(
        [], "--type", "-t", help="Only events of this type (repeatable)."
    ),
    since: str = typer.Option(DEFAULT_SINCE, "--since", help=f"Start this far back: {SINCE_FORM}."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Print the runtime's events: those of the last --since (default 10m), then with --follow
    new ones as they happen. Lines: time, type, resource id, data (JSON)."""
    try:
        window_s = parse_since(since)
        wanted = check_types(types)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    since_ts = int(time.time() - window_s) if window_s > 0 else 0
    if not follow and since_ts == 0:
        fail(f"--since 0 prints nothing without --follow; give {SINCE_FORM}", EXIT_USAGE)
    from rayinfra.client.discovery import grpc_transport, listening

    settings = dial(config, state_dir)
    addr = remote.gateway_addr(settings)
    if addr is None:
        fail(f"rayinfra is not running (state dir {settings.state_dir})", EXIT_FAILURE)
    if not listening(addr, settings.connect_timeout_s):
        fail(f"rayinfra's gateway does not answer at {addr}", EXIT_FAILURE)
    try:
        asyncio.run(_tail(grpc_transport(settings, addr), wanted, since_ts, follow, as_json))
    except KeyboardInterrupt:
        return
    except InvalidArgumentError as e:
        fail(str(e), EXIT_USAGE)
    except (ConnectionError, RuntimeError) as e:  # UnavailableError is a RuntimeError
        fail(str(e), EXIT_FAILURE)

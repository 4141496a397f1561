"""``<state dir>/connection.json``: how to reach the runtime a ``rayinfra start`` brought up.

Written atomically by the process that started (or attached to) the Ray head; read by every
client (CLI, AgentInfra, tests) before ``ray.init``. Pure data and file I/O; no Ray import.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rayinfra.config_sources import CONNECTION_FILE
from rayinfra.private_files import ensure_private_dir, write_private_text

SCHEMA = 1


@dataclass(frozen=True)
class ConnectionInfo:
    """Everything a client needs to connect, and everything ``stop`` needs to clean up."""

    gcs_address: str  # host:port of the GCS
    mode: Literal["local", "cluster"]
    loopback: bool  # head bound to 127.0.0.1 with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    auth_mode: Literal["token", "disabled"]
    token_path: str | None
    state_dir: str
    head_pid: int | None = None  # pid of `ray start --head --block`, only if rayinfra launched it
    temp_dir: str | None = None
    dashboard_url: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    head_log: str | None = None
    schema: int = SCHEMA

    @property
    def launched_by_rayinfra(self) -> bool:
        return self.head_pid is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["launched_by_rayinfra"] = self.launched_by_rayinfra
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConnectionInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def connection_path(state_dir: Path) -> Path:
    return state_dir / CONNECTION_FILE


def write_connection(info: ConnectionInfo) -> Path:
    """Write ``connection.json`` atomically, 0600 in a 0700 state dir: it names the token file
    and the head's pid, which only the runtime's user may act on."""
    path = connection_path(ensure_private_dir(Path(info.state_dir)))
    return write_private_text(path, json.dumps(info.to_dict(), indent=2, sort_keys=True))


def read_connection(state_dir: Path) -> ConnectionInfo | None:
    """The recorded connection, or ``None`` if there is none (or it is unreadable)."""
    path = connection_path(state_dir)
    try:
        return ConnectionInfo.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


def remove_connection(state_dir: Path) -> None:
    connection_path(state_dir).unlink(missing_ok=True)


def recorded(state_dir: Path) -> ConnectionInfo | None:
    """The recorded connection if its runtime still looks alive, else ``None`` (stale removed)."""
    info = read_connection(state_dir)
    if info is None:
        return None
    if info.launched_by_rayinfra and not pid_alive(info.head_pid):
        remove_connection(state_dir)
        return None
    return info


def pid_alive(pid: int | None) -> bool:
    """True if a process with this pid exists (and is not a zombie we could reap)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True

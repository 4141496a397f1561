"""A same-host doorbell: "new rows were committed, look at the store" in one datagram.

The gateway commits submits to the state store itself; the scheduler (pinned to the same head
node, as every control actor is) must then notice them. An actor call costs both processes
about half a millisecond of CPU each; a datagram on a Linux abstract Unix socket costs
microseconds and needs no file on disk. A ring carries no data: the receiver re-reads the store
from its own cursor, so a ring that is lost, repeated or forged costs at most one cheap query,
and rings that arrive together are handled once. Where abstract sockets do not exist (not
Linux), :func:`open_receiver` returns ``None`` and senders fall back to the actor call.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
from pathlib import Path

_PREFIX = "rayinfra-doorbell"


def address(db_path: Path, purpose: str) -> str:
    """The abstract socket name for ``purpose`` on the store at ``db_path`` (one per runtime)."""
    digest = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:24]
    return f"\0{_PREFIX}-{purpose}-{digest}"


def open_receiver(name: str) -> socket.socket | None:
    """A non-blocking datagram socket bound to ``name``, or ``None`` if this OS has no abstract
    sockets. Raises ``OSError`` (EADDRINUSE) if another live process holds the name."""
    if not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(name)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> int:
    """Read every pending ring; returns how many there were."""
    n = 0
    while True:
        try:
            sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return n
        n += 1


class Bell:
    """The sending side: ``ring()`` returns whether a receiver is bound (``False``: nobody
    listens, the caller should use its fallback)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sock: socket.socket | None = None
        if sys.platform.startswith("linux"):
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def ring(self) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(b"\x01", self.name)
        except BlockingIOError:
            return True  # the receiver's queue is full: rings are pending already
        except OSError:  # ConnectionRefused / FileNotFound: nobody bound the name right now
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

"""A same-host doorbell: "new rows were committed, look at the store" in one datagram.

The gateway commits submits to the state store itself; the scheduler (pinned to the same head
node, as every control actor is) must then notice them. An actor call costs both processes
about half a millisecond of CPU each; a datagram on a Linux abstract Unix socket costs
microseconds and needs no file on disk (elsewhere than Linux: a socket file beside the store).
A ring carries no data: the receiver re-reads the store from its own cursor, so a ring that is
lost, repeated or forged costs at most one cheap query, and rings that arrive together are
handled once. The receiver also re-reads the store every couple of seconds, so a submitter that
died between its commit and its ring (or rang while nobody was bound) delays a task, never
loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PREFIX = "rayinfra-doorbell"
_ABSTRACT = sys.platform.startswith("linux")  # elsewhere: a socket file


def address(db_path: Path, purpose: str) -> str:
    """The socket name for ``purpose`` on the store at ``db_path`` (one per runtime): abstract
    on Linux, a file beside the store elsewhere."""
    if not _ABSTRACT:
        return str(Path(db_path).resolve().parent / f"{purpose}.bell")
    digest = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:24]
    return f"\0{_PREFIX}-{purpose}-{digest}"


def open_receiver(name: str) -> socket.socket:
    """A non-blocking datagram socket bound to ``name``. Raises ``OSError`` (EADDRINUSE) if
    another live process holds an abstract name; a socket file left by a dead one is replaced."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if not name.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                Path(name).unlink()
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


class Receiver:
    """The receiving side, on the running event loop: ``on_ring()`` runs once per batch of
    rings. While another process still holds the name (a previous incarnation exiting), it is
    unbound; :meth:`bind` tries again (the owner's periodic sweep calls it)."""

    def __init__(self, name: str, on_ring: Callable[[], None]) -> None:
        self.name = name
        self._on_ring = on_ring
        self._sock: socket.socket | None = None
        self.bind(warn=True)

    def bind(self, *, warn: bool = False) -> None:
        if self._sock is not None:
            return
        try:
            self._sock = open_receiver(self.name)
        except OSError as e:
            if warn:
                log.warning("doorbell busy (%s): rings are missed until it binds", e)
            return
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._rang)

    def _rang(self) -> None:  # an exception here is logged by the event loop
        assert self._sock is not None
        drain(self._sock)
        self._on_ring()

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


class Bell:
    """The sending side: ``ring()`` returns whether a receiver is bound (``False``: nobody
    listens, the caller should use its fallback)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._scheduled = False

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

    def ring_soon(self, _admitted: Any = None) -> None:
        """Ring once this event-loop pass is over (after the replies being sent in it): however
        many batches a pass commits, the receiver is woken once."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._ring_scheduled)

    def _ring_scheduled(self) -> None:
        self._scheduled = False
        if not self.ring():
            log.info("nobody listens on the doorbell; the receiver's sweep finds the new rows")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

"""Network byte counters of a service's network namespace, from ``/proc`` (Linux).

Linux keeps no per-process network byte counters that an unprivileged reader can get; what
``/proc/<pid>/net/dev`` holds is the interface counters of the network namespace the process
is in. So a service's ``network_rx_bytes``/``network_tx_bytes`` are, by what its namespace is:

- a namespace of its own (a container with ``network_mode = "none"``, a process started in its
  own namespace): that namespace's interfaces, the service's traffic (scope ``namespace``);
- the runtime's own namespace (every process service started normally, a host-network
  container): the whole host's traffic, the same numbers for every such service (scope
  ``host``). They are reported as that, not as the service's own.

Loopback is left out, as Docker's stats leave it out for containers. :func:`parse_net_dev` is
pure; :func:`namespace_traffic` reads ``/proc``, and :func:`with_namespace_traffic` puts what it
read into a driver's usage sample.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rayinfra.services.drivers.base import Usage

__all__ = ["NetTraffic", "namespace_traffic", "parse_net_dev", "with_namespace_traffic"]

LOOPBACK = "lo"
PROC = Path("/proc")


@dataclasses.dataclass(frozen=True)
class NetTraffic:
    """Bytes received and sent; ``scope`` says whose (see the module docstring)."""

    rx_bytes: int
    tx_bytes: int
    scope: str


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """``/proc/net/dev`` as ``{interface: (rx bytes, tx bytes)}`` (header lines skipped)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16 or not fields[0].isdigit():
            continue
        out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def namespace_traffic(pid: int, proc: Path = PROC) -> NetTraffic | None:
    """The non-loopback byte counters of ``pid``'s network namespace, scoped ``host`` when that
    namespace is this process's own, else ``namespace``; ``None`` when ``pid`` is not a process
    here (gone, or on another machine, such as a remote Docker engine's container)."""
    try:
        text = (proc / str(pid) / "net" / "dev").read_text(encoding="ascii", errors="replace")
        theirs = (proc / str(pid) / "ns" / "net").stat().st_ino
    except OSError:
        return None
    try:
        ours: int | None = (proc / "self" / "ns" / "net").stat().st_ino
    except OSError:
        ours = None
    counters = [v for name, v in parse_net_dev(text).items() if name != LOOPBACK]
    return NetTraffic(
        rx_bytes=sum(rx for rx, _ in counters),
        tx_bytes=sum(tx for _, tx in counters),
        scope="host" if theirs == ours else "namespace",
    )


def with_namespace_traffic(usage: Usage, pid: int | None, proc: Path = PROC) -> Usage:
    """``usage`` with the byte counters of ``pid``'s network namespace and their scope
    (:func:`namespace_traffic`); ``usage`` as it is without a pid or when there is nothing to
    read."""
    traffic = namespace_traffic(pid, proc) if pid is not None else None
    if traffic is None:
        return usage
    return dataclasses.replace(
        usage,
        rx_bytes=traffic.rx_bytes,
        tx_bytes=traffic.tx_bytes,
        network_scope=traffic.scope,
    )

"""Per-client request limits of the gateway (pure: no grpc, no fastapi, no I/O).

Each client of the gateway (gRPC on both services and HTTP on both apps, one budget for all
four) may have at most ``gateway.client_max_inflight`` requests in flight (a stream counts while
it is open) and, when ``gateway.client_rate_per_s`` is set, may start requests at that rate with
bursts of ``gateway.client_rate_burst`` (a token bucket). A request over a limit is refused
before it does anything: gRPC RESOURCE_EXHAUSTED, HTTP 429 with ``Retry-After``; a request
admitted earlier is never affected.

The client is the identity of a valid token it presented (``token:auth`` or ``token:local``:
never the token itself), else its host. A token that is not valid counts for the host, so
guessing tokens does not buy a fresh budget.

Memory is bounded however many distinct clients call: at most ``gateway.client_limit_tracked``
token buckets are kept (the least recently used one is forgotten first; a forgotten client
starts again with a full burst, which is what an idle client would have), and in-flight counts
exist only for clients with requests open, at most ``client_limit_tracked`` of them (a request
from one more client is refused until one finishes).

Not thread-safe: the gateway serves every server from one event loop.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = [
    "ClientLimiter",
    "LimitSettings",
    "Refusal",
    "TokenBucket",
    "peer_host",
]

RATE_KEY = "gateway.client_rate_per_s"
BURST_KEY = "gateway.client_rate_burst"
INFLIGHT_KEY = "gateway.client_max_inflight"
TRACKED_KEY = "gateway.client_limit_tracked"
#: what an in-flight refusal suggests waiting (a request finishing frees a slot at any time)
INFLIGHT_RETRY_S = 1.0


@dataclass(frozen=True)
class LimitSettings:
    """The ``[gateway] client_*`` keys: ``rate_per_s`` 0 and ``max_inflight`` 0 turn a limit off."""

    rate_per_s: float = 0.0
    burst: int = 50
    max_inflight: int = 1024
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s >= 0):
            raise ValueError(f"{RATE_KEY} must be a finite number >= 0, got {self.rate_per_s}")
        if self.burst < 1:
            raise ValueError(f"{BURST_KEY} must be >= 1, got {self.burst}")
        if self.max_inflight < 0:
            raise ValueError(f"{INFLIGHT_KEY} must be >= 0, got {self.max_inflight}")
        if self.max_clients < 1:
            raise ValueError(f"{TRACKED_KEY} must be >= 1, got {self.max_clients}")

    @classmethod
    def of(cls, gateway: Any) -> LimitSettings:
        """The settings of a ``[gateway]`` section (:class:`rayinfra.config.GatewaySection`)."""
        return cls(
            rate_per_s=float(gateway.client_rate_per_s),
            burst=int(gateway.client_rate_burst),
            max_inflight=int(gateway.client_max_inflight),
            max_clients=int(gateway.client_limit_tracked),
        )

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0 or self.max_inflight > 0


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: ``limit`` is the config key, ``retry_after_s`` a hint."""

    limit: str
    message: str
    retry_after_s: float

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` (whole seconds, at least 1)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is (none taken)."""
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class ClientLimiter:
    """The in-flight counts and token buckets of every client (see the module docstring).

    ``acquire(client)`` admits a request (None) or says why not (:class:`Refusal`); each
    admitted request is released (``release(client)``) exactly once, when it ends.
    """

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._inflight: dict[str, int] = {}

    def acquire(self, client: str) -> Refusal | None:
        s = self.settings
        held = self._inflight.get(client, 0)
        if s.max_inflight > 0:
            if held >= s.max_inflight:
                return Refusal(
                    INFLIGHT_KEY,
                    f"client {client} has {held} requests in flight, the limit "
                    f"({INFLIGHT_KEY} = {s.max_inflight}); retry once one of them ends",
                    INFLIGHT_RETRY_S,
                )
            if held == 0 and len(self._inflight) >= s.max_clients:
                return Refusal(
                    TRACKED_KEY,
                    f"{len(self._inflight)} clients have requests in flight, the limit "
                    f"({TRACKED_KEY} = {s.max_clients}); retry once one of them ends",
                    INFLIGHT_RETRY_S,
                )
        if s.rate_per_s > 0:
            wait = self._bucket(client).take(self.clock())
            if wait > 0:
                return Refusal(
                    RATE_KEY,
                    f"client {client} is over {RATE_KEY} = {s.rate_per_s:g} requests/s "
                    f"(bursts of {BURST_KEY} = {s.burst}); retry in {wait:.2f} s",
                    wait,
                )
        if s.max_inflight > 0:
            self._inflight[client] = held + 1
        return None

    def release(self, client: str) -> None:
        if self.settings.max_inflight <= 0:
            return
        held = self._inflight.get(client, 0) - 1
        if held > 0:
            self._inflight[client] = held
        else:
            self._inflight.pop(client, None)

    def inflight(self, client: str) -> int:
        return self._inflight.get(client, 0)

    @property
    def tracked(self) -> int:
        """Clients this limiter holds state for (buckets and in-flight counts)."""
        return len(self._buckets.keys() | self._inflight.keys())

    def _bucket(self, client: str) -> TokenBucket:
        bucket = self._buckets.get(client)
        if bucket is not None:
            self._buckets.move_to_end(client)
            return bucket
        if len(self._buckets) >= self.settings.max_clients:
            self._buckets.popitem(last=False)  # the least recently used
        bucket = TokenBucket(self.settings.rate_per_s, self.settings.burst, self.clock())
        self._buckets[client] = bucket
        return bucket


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string: ``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``,
    ``ipv6:[::1]:5000`` -> ``::1``, ``unix:/path`` -> ``unix:/path``; anything else as it is."""
    kind, _, rest = unquote(peer).partition(":")  # grpc writes ipv6:%5B::1%5D:5000
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return peer

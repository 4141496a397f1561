"""The gateway's per-client limits (rayinfra.api.limits): token bucket, in-flight counts, the
memory bound, the client key; a fake clock throughout."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from rayinfra.api.auth import Auth
from rayinfra.api.limits import (
    BURST_KEY,
    INFLIGHT_KEY,
    RATE_KEY,
    TRACKED_KEY,
    ClientLimiter,
    LimitSettings,
    Refusal,
    TokenBucket,
    peer_host,
)
from rayinfra.config import GatewaySection


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**kw: float) -> tuple[ClientLimiter, Clock]:
    clock = Clock()
    return ClientLimiter(LimitSettings(**kw), clock), clock  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- defaults


def test_gateway_defaults_never_throttle_and_are_pinned() -> None:
    gw = GatewaySection()
    assert (gw.client_rate_per_s, gw.client_rate_burst) == (0.0, 50)
    assert (gw.client_max_inflight, gw.client_limit_tracked) == (1024, 10_000)
    s = LimitSettings.of(gw)
    assert s == LimitSettings(rate_per_s=0.0, burst=50, max_inflight=1024, max_clients=10_000)
    lim = ClientLimiter(s, Clock())
    # rate off: as many requests as anyone sends, one after another
    for _ in range(10_000):
        assert lim.acquire("127.0.0.1") is None
        lim.release("127.0.0.1")
    assert lim.tracked == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("client_rate_per_s", -1),
        ("client_rate_per_s", math.nan),
        ("client_rate_per_s", math.inf),
        ("client_rate_burst", 0),
        ("client_max_inflight", -1),
        ("client_limit_tracked", 0),
    ],
)
def test_gateway_config_refuses_bad_values(key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=key):
        GatewaySection(**{key: value})


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"rate_per_s": math.nan}, RATE_KEY),
        ({"rate_per_s": -0.5}, RATE_KEY),
        ({"burst": 0}, BURST_KEY),
        ({"max_inflight": -1}, INFLIGHT_KEY),
        ({"max_clients": 0}, TRACKED_KEY),
    ],
)
def test_settings_refuse_bad_values_naming_the_key(kw: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        LimitSettings(**kw)  # type: ignore[arg-type]


def test_both_limits_off_is_disabled() -> None:
    assert not LimitSettings(rate_per_s=0, max_inflight=0).enabled
    assert LimitSettings(rate_per_s=1, max_inflight=0).enabled
    assert LimitSettings(rate_per_s=0, max_inflight=1).enabled


# ----------------------------------------------------------------------------- token bucket


def test_token_bucket_bursts_then_refills_at_its_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)  # one token every 1/2 s
    assert b.take(0.25) == pytest.approx(0.25)  # a refused take takes nothing
    assert b.take(0.5) == 0.0
    assert b.take(100.0) == 0.0  # an idle bucket refills up to its burst, no more
    assert b.tokens == pytest.approx(2.0)


def test_token_bucket_ignores_a_clock_going_back() -> None:
    b = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert b.take(10.0) == 0.0
    assert b.take(5.0) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- rate


def test_rate_limit_per_client_with_retry_after_and_the_config_key() -> None:
    lim, clock = limiter(rate_per_s=1.0, burst=2, max_inflight=0)
    assert lim.acquire("a") is None and lim.acquire("a") is None
    refused = lim.acquire("a")
    assert isinstance(refused, Refusal) and refused.limit == RATE_KEY
    assert RATE_KEY in refused.message and BURST_KEY in refused.message
    assert "client a " in refused.message
    assert refused.retry_after_s == pytest.approx(1.0)
    assert refused.retry_after_header == "1"
    assert lim.acquire("b") is None  # another client has its own bucket
    clock.now += 1.0
    assert lim.acquire("a") is None
    assert lim.acquire("a") is not None


def test_retry_after_header_rounds_up_to_whole_seconds() -> None:
    assert Refusal(RATE_KEY, "", 0.01).retry_after_header == "1"
    assert Refusal(RATE_KEY, "", 2.2).retry_after_header == "3"


# ----------------------------------------------------------------------------- in flight


def test_inflight_limit_counts_until_release() -> None:
    lim, _ = limiter(max_inflight=2)
    assert lim.acquire("a") is None and lim.acquire("a") is None
    assert lim.inflight("a") == 2
    refused = lim.acquire("a")
    assert refused is not None and refused.limit == INFLIGHT_KEY
    assert INFLIGHT_KEY in refused.message and "2 requests in flight" in refused.message
    assert lim.inflight("a") == 2  # the refused one is not counted
    assert lim.acquire("b") is None  # per client
    lim.release("a")
    assert lim.acquire("a") is None
    for _ in range(2):
        lim.release("a")
    lim.release("b")
    assert lim.tracked == 0  # nothing kept for clients with nothing open


def test_inflight_refusal_does_not_spend_a_rate_token() -> None:
    lim, _ = limiter(rate_per_s=1.0, burst=2, max_inflight=1)
    assert lim.acquire("a") is None  # one token spent, one in flight
    refused = lim.acquire("a")
    assert refused is not None and refused.limit == INFLIGHT_KEY
    lim.release("a")
    assert lim.acquire("a") is None  # the second token was still there


def test_release_without_inflight_limit_is_a_no_op() -> None:
    lim, _ = limiter(rate_per_s=5.0, max_inflight=0)
    assert lim.acquire("a") is None
    lim.release("a")
    lim.release("a")
    assert lim.inflight("a") == 0


# ----------------------------------------------------------------------------- memory bound


def test_a_flood_of_distinct_clients_keeps_at_most_max_clients_buckets() -> None:
    lim, clock = limiter(rate_per_s=1.0, burst=1, max_inflight=0, max_clients=100)
    for i in range(10_000):
        assert lim.acquire(f"10.0.{i // 256}.{i % 256}") is None
        clock.now += 0.001
    assert lim.tracked == 100
    # the least recently used are forgotten: the newest are still limited
    assert lim.acquire("10.0.39.15") is not None  # i = 9999
    assert lim.acquire("10.0.0.0") is None  # forgotten: a full bucket again


def test_recently_used_clients_are_kept_over_older_ones() -> None:
    lim, _ = limiter(rate_per_s=1.0, burst=1, max_inflight=0, max_clients=2)
    assert lim.acquire("old") is None
    assert lim.acquire("new") is None
    assert lim.acquire("old") is not None  # touches "old": now the most recent
    assert lim.acquire("newer") is None  # evicts "new", the least recent
    assert lim.acquire("old") is not None  # still remembered (and still empty)


def test_clients_with_requests_in_flight_are_bounded_too() -> None:
    lim, _ = limiter(max_inflight=10, max_clients=3)
    for c in ("a", "b", "c"):
        assert lim.acquire(c) is None
    refused = lim.acquire("d")
    assert refused is not None and refused.limit == TRACKED_KEY
    assert TRACKED_KEY in refused.message
    assert lim.acquire("a") is None  # a client already counted may go on
    lim.release("b")
    assert lim.acquire("d") is None
    assert lim.tracked == 3


# ----------------------------------------------------------------------------- the client key


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:50432", "127.0.0.1"),
        ("ipv6:[::1]:50432", "::1"),
        ("ipv6:%5B::1%5D:50432", "::1"),
        ("ipv6:[fe80::1%25eth0]:1", "fe80::1%eth0"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
        ("", ""),
        ("weird", "weird"),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_auth_identity_names_a_valid_token_never_the_token() -> None:
    auth = Auth(token="T" * 40, local_token="L" * 40)
    assert auth.identity(f"Bearer {'L' * 40}") == "token:local"
    assert auth.identity(f"Bearer {'T' * 40}") == "token:auth"
    assert auth.identity("Bearer guessed") is None  # counts for its host: no fresh budget
    assert auth.identity(None) is None
    assert auth.identity(f"Basic {'L' * 40}") is None
    # the default setup: the auth token is the local token's
    same = Auth(token="L" * 40, local_token="L" * 40)
    assert same.identity(f"Bearer {'L' * 40}") == "token:local"

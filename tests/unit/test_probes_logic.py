"""Pure parts of the health probes: tracker, restart budget, wire encodings (no sockets)."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Sequence

import pytest

from rayinfra.services import probes
from rayinfra.services.probes import (
    ApiVersionsResponse,
    HealthTracker,
    HttpProtocolError,
    KafkaProtocolError,
    ProbeResult,
    RestartBudget,
    build_http_get,
    decode_api_versions_response,
    encode_api_versions_request,
    parse_http_head,
    read_http_response,
    split_http_url,
)
from rayinfra.services.spec import HealthCheck, RestartPolicy

OK = ProbeResult(True, "ok", 0.01)
BAD = ProbeResult(False, "bad", 0.01)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tcp_check(**kw: object) -> HealthCheck:
    return HealthCheck.model_validate({"kind": "tcp", "port": 1, **kw})


# ---------------------------------------------------------------------------------- HealthTracker


def test_tracker_starts_starting_and_one_success_is_healthy() -> None:
    clock = FakeClock()
    t = HealthTracker(tcp_check(retries=3), clock)
    assert t.status == "starting" and not t.changed and t.last_result is None
    assert t.observe(OK) == "healthy"
    assert t.changed and t.consecutive_failures == 0 and t.last_result is OK
    assert t.observe(OK) == "healthy"
    assert not t.changed


def test_tracker_retries_consecutive_failures_make_unhealthy_and_one_success_recovers() -> None:
    clock = FakeClock()
    t = HealthTracker(tcp_check(retries=3), clock)
    t.observe(OK)
    seen = []
    for _ in range(2):
        clock.t += 5
        seen.append((t.observe(BAD), t.changed, t.consecutive_failures))
    assert seen == [("healthy", False, 1), ("healthy", False, 2)]
    clock.t += 5
    assert t.observe(BAD) == "unhealthy"
    assert t.changed and t.consecutive_failures == 3 and t.last_change_at == clock.t
    clock.t += 5
    assert t.observe(BAD) == "unhealthy" and not t.changed and t.consecutive_failures == 4
    assert t.last_result is BAD
    clock.t += 5
    assert t.observe(OK) == "healthy" and t.changed and t.consecutive_failures == 0


def test_tracker_a_success_between_failures_resets_the_count() -> None:
    clock = FakeClock()
    t = HealthTracker(tcp_check(retries=2), clock)
    statuses = [t.observe(r) for r in (BAD, OK, BAD, OK, BAD, BAD)]
    assert statuses == ["starting", "healthy", "healthy", "healthy", "healthy", "unhealthy"]


def test_tracker_without_start_period_failures_count_from_the_start() -> None:
    clock = FakeClock()
    t = HealthTracker(tcp_check(retries=2), clock)
    assert t.observe(BAD) == "starting" and t.consecutive_failures == 1 and not t.changed
    assert t.observe(BAD) == "unhealthy" and t.changed


def test_tracker_failures_inside_start_period_do_not_count() -> None:
    clock = FakeClock(100.0)
    t = HealthTracker(tcp_check(retries=2, start_period_s=10), clock)
    for dt in (0.0, 3.0, 6.0, 9.99):
        assert t.observe(BAD, now=100.0 + dt) == "starting"
        assert t.consecutive_failures == 0 and not t.changed
    assert t.in_start_period(109.99) and not t.in_start_period(110.0)
    assert t.observe(BAD, now=110.0) == "starting" and t.consecutive_failures == 1
    assert t.observe(BAD, now=111.0) == "unhealthy" and t.changed


def test_tracker_a_success_ends_the_start_period() -> None:
    clock = FakeClock(0.0)
    t = HealthTracker(tcp_check(retries=2, start_period_s=60), clock)
    assert t.observe(OK, now=1.0) == "healthy"
    assert not t.in_start_period(2.0)
    assert t.observe(BAD, now=2.0) == "healthy" and t.consecutive_failures == 1
    assert t.observe(BAD, now=3.0) == "unhealthy"  # still "inside" 60 s, but it counts now


def test_tracker_uses_the_clock_when_now_is_omitted_and_reset_restarts_start_period() -> None:
    clock = FakeClock(0.0)
    t = HealthTracker(tcp_check(retries=1, start_period_s=5), clock)
    clock.t = 4.0
    assert t.observe(BAD) == "starting"
    clock.t = 5.0
    assert t.observe(BAD) == "unhealthy"
    clock.t = 50.0
    t.reset()
    assert t.status == "starting" and t.consecutive_failures == 0 and t.started_at == 50.0
    clock.t = 54.0
    assert t.observe(BAD) == "starting"
    clock.t = 55.5
    assert t.observe(BAD) == "unhealthy" and t.last_change_at == 55.5


# ---------------------------------------------------------------------------------- RestartBudget


def policy(**kw: object) -> RestartPolicy:
    return RestartPolicy.model_validate(kw)


def test_budget_exponential_capped_without_jitter() -> None:
    clock = FakeClock(0.0)
    b = RestartBudget(
        policy(backoff_initial_s=1, backoff_max_s=10, jitter=0, max_attempts=10, window_s=1000),
        clock,
        random.Random(1),
    )
    delays = []
    for _ in range(7):
        delays.append(b.next_delay())
        clock.t += 1
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert b.recent() == 7 and b.remaining() == 3


def test_budget_jitter_matches_seeded_rng_sample_by_sample() -> None:
    clock = FakeClock(0.0)
    p = policy(backoff_initial_s=2, backoff_max_s=100, jitter=0.5, max_attempts=5, window_s=1000)
    b = RestartBudget(p, clock, random.Random(42))
    ref = random.Random(42)
    got = [b.next_delay() for _ in range(5)]
    want = [2.0 * 2**n * (1 + 0.5 * (2 * ref.random() - 1)) for n in range(5)]
    assert got == pytest.approx(want)
    # and the jitter really moves them: all within +-50 % and not all exactly the base
    for n, d in enumerate(got):
        assert d is not None and 2.0 * 2**n * 0.5 <= d <= 2.0 * 2**n * 1.5
    assert any(d != 2.0 * 2**n for n, d in enumerate(got))


def test_budget_jittered_delay_never_exceeds_the_cap() -> None:
    clock = FakeClock(0.0)
    p = policy(backoff_initial_s=8, backoff_max_s=10, jitter=1.0, max_attempts=200, window_s=1e9)
    b = RestartBudget(p, clock, random.Random(7))
    delays = [b.next_delay() for _ in range(200)]
    assert all(d is not None and 0.0 <= d <= 10.0 for d in delays)
    assert max(d for d in delays if d is not None) == 10.0


def test_budget_refuses_after_max_attempts_in_sliding_window() -> None:
    clock = FakeClock(0.0)
    p = policy(backoff_initial_s=1, backoff_max_s=60, jitter=0, max_attempts=3, window_s=100)
    b = RestartBudget(p, clock, random.Random(0))
    assert b.next_delay(now=0.0) == 1.0
    assert b.next_delay(now=10.0) == 2.0
    assert b.next_delay(now=20.0) == 4.0
    assert b.next_delay(now=50.0) is None
    assert b.next_delay(now=99.9) is None  # refused attempts are not recorded
    assert b.remaining(now=99.9) == 0
    # at t=100 the restart at t=0 leaves the window: one more allowed, n=2 recent -> 4 s
    assert b.remaining(now=100.0) == 1
    assert b.next_delay(now=100.0) == 4.0
    assert b.next_delay(now=105.0) is None
    # at t=120 restarts at 10 and 20 have left the window: {100} remains -> n=1 -> 2 s
    assert b.next_delay(now=120.0) == 2.0


def test_budget_reset_forgets_restarts() -> None:
    clock = FakeClock(0.0)
    p = policy(backoff_initial_s=0.5, backoff_max_s=60, jitter=0, max_attempts=2, window_s=600)
    b = RestartBudget(p, clock, random.Random(0))
    assert [b.next_delay(), b.next_delay(), b.next_delay()] == [0.5, 1.0, None]
    b.reset()
    assert b.remaining() == 2
    assert b.next_delay() == 0.5


def test_budget_zero_attempts_never_restarts_and_huge_counts_do_not_overflow() -> None:
    b0 = RestartBudget(policy(max_attempts=0), FakeClock(), random.Random(0))
    assert b0.next_delay() is None
    clock = FakeClock(0.0)
    big = RestartBudget(
        policy(backoff_initial_s=1, backoff_max_s=30, jitter=0, max_attempts=5000, window_s=1e9),
        clock,
        random.Random(0),
    )
    delays = [big.next_delay() for _ in range(2000)]
    assert delays[-1] == 30.0


def test_budget_defaults_use_the_real_clock_and_a_random_source() -> None:
    b = RestartBudget(policy(backoff_initial_s=1, jitter=0.2))
    d = b.next_delay()
    assert d is not None and 0.8 <= d <= 1.2


# -------------------------------------------------------------------------------- Kafka encoding


def test_api_versions_request_bytes() -> None:
    # size=12 | api_key=18 | api_version=0 | correlation_id=7 | client_id len=2 "ab" | (empty body)
    raw = encode_api_versions_request(7, "ab")
    assert (
        raw == b"\x00\x00\x00\x0c" + b"\x00\x12" + b"\x00\x00" + b"\x00\x00\x00\x07" + b"\x00\x02ab"
    )
    (size,) = struct.unpack(">i", raw[:4])
    assert size == len(raw) - 4


def test_api_versions_request_default_client_id_and_big_correlation_id() -> None:
    raw = encode_api_versions_request(0x7FFFFFFF)
    cid = probes.CLIENT_ID.encode()
    assert raw[4:12] == b"\x00\x12\x00\x00\x7f\xff\xff\xff"
    assert raw[12:14] == struct.pack(">h", len(cid)) and raw[14:] == cid
    assert struct.unpack(">i", raw[:4])[0] == 10 + len(cid)


def test_api_versions_response_decode() -> None:
    # correlation_id=7 | error_code=0 | 2 keys: (0, 0..9), (18, 0..3)
    payload = (
        b"\x00\x00\x00\x07"
        + b"\x00\x00"
        + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x00\x00\x09"
        + b"\x00\x12\x00\x00\x00\x03"
    )
    assert decode_api_versions_response(payload) == ApiVersionsResponse(
        correlation_id=7, error_code=0, api_keys=((0, 0, 9), (18, 0, 3))
    )


def test_api_versions_response_with_error_and_no_keys() -> None:
    payload = struct.pack(">ihi", 3, 35, 0)
    assert decode_api_versions_response(payload) == ApiVersionsResponse(3, 35, ())


def test_api_versions_response_tolerates_trailing_v1_throttle_field() -> None:
    payload = struct.pack(">ihi", 1, 0, 1) + struct.pack(">hhh", 18, 0, 3) + struct.pack(">i", 0)
    assert decode_api_versions_response(payload).api_keys == ((18, 0, 3),)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x00\x00\x01\x00",
        struct.pack(">ihi", 1, 0, 2) + struct.pack(">hhh", 0, 0, 1),  # claims 2, carries 1
        struct.pack(">ihi", 1, 0, -1),
        b"+PONG\r\n\x00\x00\x00",
    ],
)
def test_api_versions_response_rejects_malformed(payload: bytes) -> None:
    with pytest.raises(KafkaProtocolError):
        decode_api_versions_response(payload)


# ---------------------------------------------------------------------------------- HTTP parsing


def test_parse_http_head() -> None:
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"X-A: 1\r\nx-a: 2\r\nContent-Length: 4\r\n\r\n"
    )
    version, status, reason, headers = parse_http_head(head)
    assert (version, status, reason) == ("HTTP/1.1", 503, "Service Unavailable")
    assert headers == {"content-type": "text/plain", "x-a": "1, 2", "content-length": "4"}


def test_parse_http_head_without_reason() -> None:
    assert parse_http_head(b"HTTP/1.0 200\r\n\r\n")[:3] == ("HTTP/1.0", 200, "")


@pytest.mark.parametrize(
    "head",
    [
        b"-ERR unknown command\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
)
def test_parse_http_head_rejects_garbage(head: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        parse_http_head(head)


async def _feed(
    data: bytes, *, want_body: bool = True, max_body: int = 1 << 20
) -> probes.HttpResponse:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_http_response(reader, want_body=want_body, max_body=max_body)


async def test_read_http_response_content_length() -> None:
    r = await _feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA")
    assert (r.status, r.body, r.truncated) == (200, b"hello", False)


async def test_read_http_response_chunked() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    )
    r = await _feed(raw)
    assert r.body == b"Wikipedia in \r\n\r\nchunks." and not r.truncated


async def test_read_http_response_until_eof_and_truncation() -> None:
    r = await _feed(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 100)
    assert r.body == b"x" * 100 and not r.truncated
    r = await _feed(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 100, max_body=10)
    assert r.body == b"x" * 10 and r.truncated
    r = await _feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 100, max_body=10)
    assert r.body == b"y" * 10 and r.truncated
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nabcdefgh\r\n0\r\n\r\n"
    r = await _feed(chunked, max_body=5)
    assert r.body == b"abcde" and r.truncated


async def test_read_http_response_head_only_and_no_body_statuses() -> None:
    r = await _feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", want_body=False)
    assert (r.status, r.body) == (200, b"")
    r = await _feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (r.status, r.body) == (204, b"")


async def test_read_http_response_errors() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await _feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(asyncio.IncompleteReadError):
        await _feed(b"HTTP/1.1 200 OK\r\n")  # connection closed inside the head
    with pytest.raises(HttpProtocolError):
        await _feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    with pytest.raises(HttpProtocolError):
        await _feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")


def test_build_http_get() -> None:
    assert build_http_get("127.0.0.1", 8080, "/health?x=1") == (
        b"GET /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"User-Agent: rayinfra-health/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    assert b"\r\nHost: example\r\n" in build_http_get("example", 80, "/")
    assert b"\r\nHost: [::1]:81\r\n" in build_http_get("::1", 81, "/")


def test_split_http_url() -> None:
    assert split_http_url("http://127.0.0.1:9090/-/healthy") == ("127.0.0.1", 9090, "/-/healthy")
    assert split_http_url("http://localhost") == ("localhost", 80, "/")
    assert split_http_url("http://[::1]:5/a?b=c") == ("::1", 5, "/a?b=c")
    for bad, text in (
        ("https://127.0.0.1/", "https is not supported"),
        ("ftp://x/", "unsupported URL"),
        ("127.0.0.1:80/x", "unsupported URL"),
        ("http:///x", "no host"),
        ("http://h:99999/", "invalid port"),
    ):
        with pytest.raises(probes.ProbeError, match=text):
            split_http_url(bad)


# ------------------------------------------------------------------------------ container / misc


async def test_probe_container_statuses() -> None:
    r = await probes.probe_container("healthy")
    assert r.healthy
    r = await probes.probe_container("starting")
    assert not r.healthy and r.message == "starting"
    r = await probes.probe_container(None)
    assert not r.healthy and r.message == "container has no HEALTHCHECK"
    r = await probes.probe_container("unhealthy")
    assert not r.healthy and "unhealthy" in r.message


async def test_run_probe_dispatches_container_and_command_without_exec() -> None:
    check = HealthCheck(kind="container")
    assert (await probes.run_probe(check, container_health="healthy")).healthy
    r = await probes.run_probe(check, container_health="starting")
    assert not r.healthy and r.message == "starting"
    cmd = HealthCheck(kind="command", command=["true"])
    r = await probes.run_probe(cmd)
    assert not r.healthy and "no exec function" in r.message


async def test_probe_command_with_fake_runners() -> None:
    calls: list[tuple[list[str], float]] = []

    def ok(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        calls.append((list(argv), timeout_s))
        return 0, "PONG\n"

    r = await probes.probe_command(ok, ["redis-cli", "ping"], 2.5, expect="PONG")
    assert r.healthy and r.details["exit_code"] == "0"
    assert calls == [(["redis-cli", "ping"], 2.5)]
    r = await probes.probe_command(ok, ["x"], 1.0, expect="nope")
    assert not r.healthy and "does not contain 'nope'" in r.message

    def fails(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        return 3, "boom happened"

    r = await probes.probe_command(fails, ["x"], 1.0)
    assert not r.healthy and "exit code 3" in r.message and "boom happened" in r.message

    def raises(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        raise RuntimeError("container is gone")

    r = await probes.probe_command(raises, ["x"], 1.0)
    assert not r.healthy and "container is gone" in r.message

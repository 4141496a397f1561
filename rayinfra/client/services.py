"""The gateway's ``env_manager.v1`` service as a small synchronous client: what ``rayinfra
services ...`` and ``rayinfra logs`` use, so a command is a gRPC client of the running runtime
(milliseconds) and never a Ray driver (a second or two to join).

    with ServicesClient.from_config(config) as services:
        for update in services.start(["redis"]):
            print(update["service_name"], update["status"], update["progress"])
        print(services.stop(["redis"]))  # {"redis": "stopped"}

Every call sends ``authorization: Bearer <token>`` when a token is known (the configured auth
token, else the local gateway token file: :func:`~rayinfra.client.discovery.gateway_credentials`).
Errors are the client's typed errors (:func:`~rayinfra.client.grpc_transport.error_from_rpc`),
except NOT_FOUND, which here is about a service, not a task: an unknown name is
:class:`~rayinfra.errors.InvalidArgumentError` on ``service_name`` (as the other RPCs answer an
unknown service), a service with nothing to show is :class:`ServiceNotFoundError`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from rayinfra.api import stubs
from rayinfra.client.discovery import gateway_credentials
from rayinfra.client.grpc_transport import (
    ConnectError,
    bearer_metadata,
    error_from_rpc,
    gateway_channel,
    gave_up,
    retry_unavailable,
    unavailable,
)
from rayinfra.config_sources import DialSettings, as_dial, dial_addr
from rayinfra.errors import InvalidArgumentError

if TYPE_CHECKING:
    from rayinfra.config import RayinfraConfig

#: deadline of the unary calls (a stop waits for each service's own stop timeout)
CALL_TIMEOUT_S = 120.0
#: the standard gRPC health check every gateway server answers (grpc.health.v1)
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class ServiceNotFoundError(LookupError):
    """The service has nothing to show (no instance to read logs of): gRPC NOT_FOUND."""


def rpc_error(e: grpc.RpcError) -> BaseException:
    """The typed error of an env-manager status (see the module docstring)."""
    if e.code() != grpc.StatusCode.NOT_FOUND:
        return error_from_rpc(e)
    details = e.details() or ""
    field_name, sep, message = details.partition(": ")
    if sep and field_name == "service_name":
        return InvalidArgumentError(field_name, message)
    return ServiceNotFoundError(details)


def _fields(message: Any) -> dict[str, Any]:
    """A message of scalar fields as ``{field name: value}``."""
    return {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}


def wire_seconds(timeout_s: float | None) -> int:
    """A timeout for an ``int32 timeout_seconds`` field: whole seconds rounded up, 0 (the
    server's default) for ``None`` or 0."""
    return math.ceil(timeout_s) if timeout_s and timeout_s > 0 else 0


class ServicesClient:
    """One channel to the env manager at ``addr``; the constructor waits up to
    ``connect_timeout_s`` for it (:class:`~rayinfra.client.grpc_transport.ConnectError`).

    A followed log stream outlives a restart of the gateway: broken by UNAVAILABLE, it is
    opened again where it was, retried with back-off up to ``backoff_s`` (a WARNING per attempt)
    until the gateway has not answered for ``retry_for_s``
    (:class:`~rayinfra.errors.UnavailableError`). Other calls are not retried: a command
    says at once that the runtime does not answer."""

    def __init__(
        self,
        addr: str,
        *,
        token: str | None = None,
        tls_ca: bytes | None = None,
        connect_timeout_s: float = 5.0,
        retry_for_s: float = 60.0,
        backoff_s: float = 2.0,
    ) -> None:
        self.addr = addr
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self.pb2, pb2_grpc = stubs.env_manager()
        self._metadata = bearer_metadata(token)
        self._channel = gateway_channel(addr, tls_ca, redial_max_s=backoff_s)
        if not self._answers(connect_timeout_s):
            self._channel.close()
            raise ConnectError(addr, connect_timeout_s)
        self._stub = pb2_grpc.EnvManagerServiceStub(self._channel)

    def _answers(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the server to answer anything: a gRPC health check
        (empty request: the whole server) that waits for the connection. Not
        ``grpc.channel_ready_future``: its connectivity poller makes a ``close()`` within the
        next 0.2 s block until then, a fifth of a second on every command."""
        check = self._channel.unary_unary(
            HEALTH_CHECK, request_serializer=bytes, response_deserializer=bytes
        )
        try:
            check(b"", metadata=self._metadata, timeout=timeout_s, wait_for_ready=True)
        except grpc.RpcError as e:  # any answer but "nobody there" means it is up
            return e.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        return True

    @classmethod
    def from_config(
        cls, config: RayinfraConfig | DialSettings, connect_timeout_s: float | None = None
    ) -> ServicesClient:
        """The env manager of this config's runtime (``gateway.env_manager_grpc_addr``), with
        its token and TLS CA."""
        dial = as_dial(config)
        token, tls_ca = gateway_credentials(dial)
        return cls(
            dial_addr(dial.env_manager_grpc_addr),
            token=token,
            tls_ca=tls_ca,
            connect_timeout_s=connect_timeout_s or dial.connect_timeout_s,
            retry_for_s=dial.service_timeout_s,
            backoff_s=dial.reconnect_backoff_s,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ServicesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=CALL_TIMEOUT_S
            )
        except grpc.RpcError as e:
            raise rpc_error(e) from None

    def _stream(self, method: str, request: Any) -> Iterator[Any]:
        call = getattr(self._stub, method)(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as e:
            raise rpc_error(e) from None
        finally:
            call.cancel()

    def _resumed(self, method: str, request_for: Callable[[], Any]) -> Iterator[Any]:
        """A server stream opened again with ``request_for()`` (which resumes from what the
        caller has seen) each time UNAVAILABLE breaks it, until the gateway has not answered
        for ``retry_for_s`` since the stream last delivered (or opened)."""
        from tenacity import Retrying

        answered = time.monotonic()

        def silent_too_long(_: object) -> bool:
            return time.monotonic() - answered > self.retry_for_s

        retrying = Retrying(
            **retry_unavailable(self.addr, method, stop=silent_too_long, backoff_s=self.backoff_s)
        )
        try:
            for attempt in retrying:
                with attempt:
                    call = getattr(self._stub, method)(request_for(), metadata=self._metadata)
                    try:
                        for message in call:
                            answered = time.monotonic()
                            yield message
                        return
                    finally:
                        call.cancel()
        except grpc.RpcError as e:
            if unavailable(e):
                raise gave_up(self.addr, method, self.retry_for_s, e) from None
            raise rpc_error(e) from None

    # ------------------------------------------------------------------ services
    def start(
        self,
        names: Sequence[str] = (),
        parallel: bool = True,
        overrides: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Start services (empty: the selection) and what they depend on. Yields each update
        ``{service_name, status, message, progress, required}``; each service ends with one
        at progress 100 (``required`` is set on that one)."""
        request = self.pb2.StartServicesRequest(
            service_names=list(names), parallel=parallel, overrides=dict(overrides or {})
        )
        yield from map(_fields, self._stream("StartServices", request))

    def stop(self, names: Sequence[str] = (), timeout_s: float | None = None) -> dict[str, str]:
        """Stop services (empty: all but orphans), dependants first: ``name -> "stopped" |
        "not running" | "error: ..."``. ``timeout_s``: before SIGKILL (whole seconds)."""
        res = self._unary(
            "StopServices",
            self.pb2.StopServicesRequest(
                service_names=list(names), timeout_seconds=wire_seconds(timeout_s)
            ),
        )
        return dict(sorted(res.service_results.items()))

    def restart(self, name: str, timeout_s: float | None = None) -> tuple[bool, str]:
        """Stop and start one service: ``(success, message)``."""
        res = self._unary(
            "RestartService",
            self.pb2.RestartServiceRequest(
                service_name=name, timeout_seconds=wire_seconds(timeout_s)
            ),
        )
        return bool(res.success), str(res.message)

    def prune(self, timeout_s: float | None = None) -> dict[str, str]:
        """Stop, remove and forget the orphaned services: ``name -> stop result``."""
        res = self._unary(
            "PruneServices",
            self.pb2.PruneServicesRequest(timeout_seconds=wire_seconds(timeout_s)),
        )
        return dict(sorted(res.service_results.items()))

    def status(self, names: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """``name -> {status, container_id, ports, started_at}`` (empty ``names``: every
        service). The full rows, with driver, health and resource use, are the orchestrator's
        GetRuntimeStatus (``rayinfra services status``)."""
        res = self._unary(
            "GetServicesStatus", self.pb2.GetServicesStatusRequest(service_names=list(names))
        )
        return {
            name: {
                "status": s.status,
                "container_id": s.container_id,
                "ports": list(s.ports),
                "started_at": s.started_at,
            }
            for name, s in sorted(res.services.items())
        }

    def pull(self, images: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
        """Pull images (empty: the catalog's): ``{image_name, status, current, total,
        progress_percent, message}`` as bytes arrive; ``status`` ends ``complete`` or ``error``
        (with ``message``)."""
        request = self.pb2.PullImagesRequest(image_names=list(images))
        yield from map(_fields, self._stream("PullImages", request))

    def logs(
        self,
        name: str,
        follow: bool = False,
        tail: int | None = None,
        since: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """A service's log lines ``{service_name, container_id, stream, message, timestamp}``
        (``timestamp``: unix seconds with fraction, when the line was produced); ``tail``: the
        last N (``None``: all), ``since``: unix seconds (whole seconds on the wire). ``name``
        may be a runtime actor (``scheduler``, ``gateway``, ``executor-<class>-<n>``, ...):
        its lines have ``timestamp`` 0 (Ray's own is in the text) and ignore ``since``.

        Followed, the stream outlives a restart of the gateway (see the class): a service's
        lines go on after the last one yielded (each line once: the stream re-opens at the
        last line's second and skips what was yielded already); a runtime actor's, whose
        lines carry no timestamp, go on with the lines written from the re-opening on."""
        request = self.pb2.StreamLogsRequest(
            service_name=name,
            follow=follow,
            tail=max(tail or 0, 0),
            since_timestamp=int(since or 0),
        )
        if tail is not None:
            request.tail_lines = tail
        last = LogPosition()

        def request_for() -> Any:
            if last.at is None:  # nothing yielded yet: as asked
                return request
            last.resume()
            if not last.at:  # an actor's log: from now on
                return self.pb2.StreamLogsRequest(service_name=name, follow=True, tail_lines=0)
            return self.pb2.StreamLogsRequest(
                service_name=name, follow=True, since_timestamp=int(last.at)
            )

        if follow:
            entries = self._resumed("StreamLogs", request_for)
        else:
            entries = self._stream("StreamLogs", request)
        for entry in entries:
            line = _fields(entry)
            line["timestamp"] = line.pop("logged_at") or float(entry.timestamp)
            if last.fresh(line["timestamp"], line["message"]):
                yield line


class LogPosition:
    """Where a followed log stream is, to re-open it after its last line: the timestamp of the
    last line yielded (``None``: none yet; 0: lines without one) and how many of each message
    were yielded at that timestamp. After :meth:`resume`, lines older than it and as many
    copies of each message at it as were yielded are skipped (a service may print the same
    line twice within one timestamp)."""

    def __init__(self) -> None:
        self.at: float | None = None
        self._yielded: Counter[str] = Counter()
        self._skip: Counter[str] | None = None  # while replaying after a resume

    def resume(self) -> None:
        self._skip = Counter(self._yielded)

    def fresh(self, at: float, message: str) -> bool:
        """Whether to yield this line (recorded if so)."""
        if self._skip is not None and at and self.at:
            if at < self.at:
                return False
            if at == self.at and self._skip[message] > 0:
                self._skip[message] -= 1
                return False
        if at != self.at:
            self.at = at
            self._yielded.clear()
            self._skip = None  # past the replay
        if at:
            self._yielded[message] += 1
        return True

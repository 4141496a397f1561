"""What both gRPC services share: error codes, the auth interceptor, trust, string maps."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from rayinfra import compat, errors
from rayinfra.api.auth import Auth, bearer
from rayinfra.api.limits import ClientLimiter, peer_host
from rayinfra.services.spec import SpecError


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for a typed error, or None for an unexpected one."""
    if isinstance(e, errors.TaskConflictError):
        return grpc.StatusCode.ALREADY_EXISTS, str(e)
    if isinstance(e, errors.ClassPolicyError):  # a token would not help: no hint to send one
        return grpc.StatusCode.PERMISSION_DENIED, str(e)
    if isinstance(e, errors.NotTrustedError):
        return grpc.StatusCode.PERMISSION_DENIED, (
            f"{e}: present the token from the rayinfra token file (authorization: Bearer <token>)"
        )
    if isinstance(e, errors.InvalidArgumentError | SpecError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, errors.TaskNotFoundError):
        return grpc.StatusCode.NOT_FOUND, f"unknown task {e.args[0] if e.args else ''!s}"
    if isinstance(e, errors.WorkflowNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(e)
    if isinstance(e, errors.BackendUnavailableError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    if isinstance(e, errors.UnavailableError):
        return grpc.StatusCode.UNAVAILABLE, str(e)
    if isinstance(e, errors.PermissionDeniedError):
        return grpc.StatusCode.PERMISSION_DENIED, str(e)
    if isinstance(e, errors.StorageFullError | errors.QueueFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)
    return None


async def abort_for(context: grpc.aio.ServicerContext, e: BaseException) -> None:
    """Abort the call with the status of ``e`` (unexpected errors: INTERNAL, with the type)."""
    mapped = status_of(e)
    if mapped is None:
        mapped = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
    await context.abort(*mapped)


@contextlib.asynccontextmanager
async def aborting(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Abort the call with the status of any error raised inside (:func:`abort_for`)."""
    try:
        yield
    except Exception as e:
        await abort_for(context, e)
        raise


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


def is_trusted(auth: Auth, context: grpc.aio.ServicerContext) -> bool:
    return auth.trusted(metadata_value(context, "authorization"))


def is_current_client(context: grpc.aio.ServicerContext) -> bool:
    """Whether the caller says it speaks the current protos (``rayinfra-api: 2`` metadata);
    otherwise it is taken for a client of the original ones (:mod:`rayinfra.compat`)."""
    return compat.is_current_client(metadata_value(context, compat.API_LEVEL_METADATA))


def decode_payload(m: Mapping[str, str], *, original: bool, field: str) -> dict[str, Any]:
    """A ``map<string,string>`` payload (``field``: its request field) decoded as JSON
    (:func:`rayinfra.compat.decode_wire_map`). A value the decoder fails on in another way than
    InvalidArgumentError (an integer of thousands of digits: Python's ``int()`` limit) is bad
    input too: INVALID_ARGUMENT naming its key, never INTERNAL."""
    m = dict(m)  # a protobuf map field
    try:
        return compat.decode_wire_map(m, original=original)
    except errors.InvalidArgumentError:
        raise
    except ValueError as e:
        culprit = next((k for k in m if not _decodes({k: m[k]}, original)), None)
        where = field if culprit is None else key_path(field, culprit)
        raise errors.InvalidArgumentError(where, f"cannot be decoded: {e}") from None


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,80}")


def key_path(field: str, key: str) -> str:
    """The path of a map entry in an error: ``payload.seconds``, or for a key that is not a
    plain word ``payload["a b"]`` (JSON-quoted, cut to 80 characters): a path never holds a
    space, a colon or a control character of its own."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{field}.{key}"
    return f"{field}[{json.dumps(key[:80])}]"


def _decodes(m: Mapping[str, str], original: bool) -> bool:
    try:
        compat.decode_wire_map(m, original=original)
    except ValueError:
        return False
    return True


def string_map(data: Mapping[str, Any]) -> dict[str, str]:
    """A ``map<string,string>``: strings pass, other values become compact JSON."""
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
        for k, v in data.items()
    }


#: admits a call (aborting it with RESOURCE_EXHAUSTED when its client is over a limit) and
#: returns what releases it when the call ends
Admit = Callable[[grpc.aio.ServicerContext], Awaitable[Callable[[], None]]]


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED for every call without the right bearer token when auth is required
    (gRPC health checks included: a monitoring system gets the token too).

    Every handler it returns (:func:`decoding_handler`) decodes its request itself, so a request
    that is not valid protobuf is INVALID_ARGUMENT rather than grpcio's UNKNOWN, and, given
    ``limits``, admits the call under its client's limits first (:func:`client_admission`:
    RESOURCE_EXHAUSTED when over; a refused unauthenticated call counts for its host).
    """

    def __init__(self, auth: Auth, limits: ClientLimiter | None = None) -> None:
        self.auth = auth
        self.admit = client_admission(limits, auth)
        # method -> (the handler the server resolved, its decoding twin); built once per method
        self._decoding: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if self.auth.required:
            header = None
            for k, v in handler_call_details.invocation_metadata or ():
                if k == "authorization":
                    header = v if isinstance(v, str) else v.decode()
            denied = self.auth.check(bearer(header), header is not None)
            if denied is not None:
                return decoding_handler(_deny(denied), self.admit)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED
            return None
        cached = self._decoding.get(handler_call_details.method)
        if cached is None or cached[0] is not handler:
            cached = handler, decoding_handler(handler, self.admit)
            self._decoding[handler_call_details.method] = cached
        return cached[1]


def client_admission(limits: ClientLimiter | None, auth: Auth) -> Admit | None:
    """How a call is admitted under ``limits`` (None: no limits configured). The client is the
    identity of a valid token it sent (:meth:`Auth.identity`), else its peer's host."""
    if limits is None or not limits.settings.enabled:
        return None

    async def admit(context: grpc.aio.ServicerContext) -> Callable[[], None]:
        client = auth.identity(metadata_value(context, "authorization"))
        if client is None:
            client = peer_host(context.peer() or "")
        refused = limits.acquire(client)
        if refused is not None:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                refused.message,
                trailing_metadata=(("retry-after", refused.retry_after_header),),
            )
        return functools.partial(limits.release, client)

    return admit


def _nothing() -> None:
    return None


def decoding_handler(handler: grpc.RpcMethodHandler, admit: Admit | None = None) -> Any:
    """``handler``, deserializing its request(s) inside the call: a request that is not a
    valid message is aborted with INVALID_ARGUMENT naming the message type. With ``admit``, the
    call is admitted first and released when it ends (a stream: when it closes).

    grpcio's aio server decodes before the handler runs, and a DecodeError there answers
    UNKNOWN ("Unexpected DecodeError"). Here the server is given no deserializer (so it passes
    the received bytes through as they are) and the behaviour decodes them: the same single
    decode, plus one call. Every kind of handler is wrapped: unary or streaming requests (a
    request iterator yields decoded messages), async generators, coroutines (a stream written
    with ``context.write``, as grpc health's Watch) and plain functions (grpc health's List,
    which its library leaves unimplemented).
    """
    decode = handler.request_deserializer
    if decode is None and admit is None:
        return handler
    owner = getattr(decode, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None) or getattr(owner, "__name__", "request message")
    prefix = f"request is not a valid {name}: "

    async def parse(raw: Any, context: grpc.aio.ServicerContext) -> Any:
        if decode is None:
            return raw
        try:
            return decode(raw)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{prefix}{e}")
            raise  # not reached: abort raises

    async def requests(raw: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        async for one in raw:
            yield await parse(one, context)

    def request_of(raw: Any, context: grpc.aio.ServicerContext) -> Awaitable[Any]:
        if handler.request_streaming:
            return _ready(requests(raw, context))
        return parse(raw, context)

    enter = admit or _admit_all
    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    behaviour = getattr(handler, kind)
    serialize = handler.response_serializer
    make = getattr(grpc, f"{kind}_rpc_method_handler")

    if handler.response_streaming and not inspect.iscoroutinefunction(behaviour):

        async def stream(raw: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            release = await enter(context)
            try:
                result = behaviour(await request_of(raw, context), context)
                if inspect.isawaitable(result):
                    result = await result
                if hasattr(result, "__aiter__"):
                    async with contextlib.aclosing(result) as responses:
                        async for response in responses:
                            yield response
                elif result is not None:
                    for response in result:
                        yield response
            finally:
                release()

        return make(stream, request_deserializer=None, response_serializer=serialize)

    async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
        # unary-unary, or a coroutine writing its stream with context.write
        release = await enter(context)
        try:
            result = behaviour(await request_of(raw, context), context)
            return (await result) if inspect.isawaitable(result) else result
        finally:
            release()

    return make(call, request_deserializer=None, response_serializer=serialize)


async def _admit_all(context: grpc.aio.ServicerContext) -> Callable[[], None]:
    return _nothing


async def _ready(value: Any) -> Any:
    return value


def _deny(message: str) -> grpc.RpcMethodHandler:
    """A handler that answers any call (unary or streaming) with UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(unary)

"""What both gRPC services share: error codes, the auth interceptor, trust, string maps."""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from rayinfra import compat, errors
from rayinfra.api.auth import Auth, bearer
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
    if isinstance(e, errors.StorageFullError):
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


def string_map(data: Mapping[str, Any]) -> dict[str, str]:
    """A ``map<string,string>``: strings pass, other values become compact JSON."""
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
        for k, v in data.items()
    }


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED for every call without the right bearer token when auth is required
    (gRPC health checks included: a monitoring system gets the token too).

    Every handler it lets through decodes its request itself (:func:`decoding_handler`), so a
    request that is not valid protobuf is INVALID_ARGUMENT rather than grpcio's UNKNOWN.
    """

    def __init__(self, auth: Auth) -> None:
        self.auth = auth
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
                return _deny(denied)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED
            return None
        cached = self._decoding.get(handler_call_details.method)
        if cached is None or cached[0] is not handler:
            cached = handler, decoding_handler(handler)
            self._decoding[handler_call_details.method] = cached
        return cached[1]


def decoding_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler``, deserializing its request inside the call: a request that is not a valid
    message is aborted with INVALID_ARGUMENT naming the message type.

    grpcio's aio server decodes before the handler runs, and a DecodeError there answers
    UNKNOWN ("Unexpected DecodeError"). Here the server is given no deserializer (so it passes
    the received bytes through as they are) and the behaviour decodes them: the same single
    decode, plus one call. Async unary-unary and unary-stream handlers (async generator or
    ``context.write`` style) are wrapped; any other handler is returned unchanged.
    """
    decode = handler.request_deserializer
    if decode is None or handler.request_streaming:
        return handler
    owner = getattr(decode, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None) or getattr(owner, "__name__", "request message")
    prefix = f"request is not a valid {name}: "

    async def parse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return decode(raw)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{prefix}{e}")
            raise  # not reached: abort raises

    serialize = handler.response_serializer
    stream = handler.unary_stream
    if inspect.isasyncgenfunction(stream):

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with contextlib.aclosing(stream(await parse(raw, context), context)) as responses:
                async for response in responses:
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=None, response_serializer=serialize
        )
    # a coroutine: unary-unary, or unary-stream writing with context.write (grpc health's Watch)
    behaviour = stream if handler.response_streaming else handler.unary_unary
    if not inspect.iscoroutinefunction(behaviour):
        return handler

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await behaviour(await parse(raw, context), context)

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            call, request_deserializer=None, response_serializer=serialize
        )
    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=None, response_serializer=serialize
    )


def _deny(message: str) -> grpc.RpcMethodHandler:
    """A handler that answers any call (unary or streaming) with UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(unary)

"""What both gRPC services share: error codes, the auth interceptor, trust, string maps."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from rayinfra.api.auth import Auth, bearer
from rayinfra.errors import (
    BackendUnavailable,
    InvalidArgument,
    NotTrusted,
    PermissionDenied,
    TaskConflict,
    TaskNotFoundError,
    Unavailable,
)
from rayinfra.services.spec import SpecError


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for a typed error, or None for an unexpected one."""
    if isinstance(e, TaskConflict):
        return grpc.StatusCode.ALREADY_EXISTS, str(e)
    if isinstance(e, NotTrusted):
        return grpc.StatusCode.PERMISSION_DENIED, (
            f"{e}: present the token from the rayinfra token file (authorization: Bearer <token>)"
        )
    if isinstance(e, InvalidArgument | SpecError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, TaskNotFoundError):
        return grpc.StatusCode.NOT_FOUND, f"unknown task {e.args[0] if e.args else ''!s}"
    if isinstance(e, BackendUnavailable):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    if isinstance(e, Unavailable):
        return grpc.StatusCode.UNAVAILABLE, str(e)
    if isinstance(e, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, str(e)
    return None


async def abort_for(context: grpc.aio.ServicerContext, e: BaseException) -> None:
    """Abort the call with the status of ``e`` (unexpected errors: INTERNAL, with the type)."""
    mapped = status_of(e)
    if mapped is None:
        mapped = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
    await context.abort(*mapped)


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


def is_trusted(auth: Auth, context: grpc.aio.ServicerContext) -> bool:
    return auth.trusted(metadata_value(context, "authorization"))


def string_map(data: Mapping[str, Any]) -> dict[str, str]:
    """A ``map<string,string>``: strings pass, other values become compact JSON."""
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
        for k, v in data.items()
    }


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED for every call without the right bearer token when auth is required
    (gRPC health checks included: a monitoring system gets the token too)."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not self.auth.required:
            return await continuation(handler_call_details)
        header = None
        for k, v in handler_call_details.invocation_metadata or ():
            if k == "authorization":
                header = v if isinstance(v, str) else v.decode()
        denied = self.auth.check(bearer(header), header is not None)
        if denied is None:
            return await continuation(handler_call_details)
        return _deny(denied)


def _deny(message: str) -> grpc.RpcMethodHandler:
    """A handler that answers any call (unary or streaming) with UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(unary)

"""Errors shared by the actors, mapped to gRPC codes / HTTP statuses by the gateway."""

from __future__ import annotations

from typing import Any


class InvalidArgument(ValueError):
    """A request field is invalid. ``str(e)`` is ``"<field>: <message>"``; ``e.field`` names it.

    The gateway maps it to gRPC ``INVALID_ARGUMENT`` / HTTP 400. It pickles with its field intact,
    so it survives a trip through Ray.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message))


class NotTrusted(InvalidArgument):
    """The request runs code and the caller is not trusted (gRPC PERMISSION_DENIED, HTTP 403)."""


class TaskConflict(InvalidArgument):
    """A task id already exists with a different spec (gRPC ALREADY_EXISTS, HTTP 409)."""


class BackendUnavailable(RuntimeError):
    """The request needs a backend that is not available (gRPC FAILED_PRECONDITION, HTTP 503)."""


class TaskNotFoundError(KeyError):
    """No task with that id (gRPC NOT_FOUND, HTTP 404)."""


class TaskNotFound(KeyError):
    """No task with that id: what the Python client raises (exported as ``rayinfra.TaskNotFound``)."""

    def __str__(self) -> str:
        return f"task {self.args[0]!r} not found" if self.args else "task not found"


class Unavailable(RuntimeError):
    """A control actor cannot be reached right now (gRPC UNAVAILABLE, HTTP 503)."""


class PermissionDenied(RuntimeError):
    """The caller may not do this (gRPC PERMISSION_DENIED, HTTP 403)."""

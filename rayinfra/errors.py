"""Errors shared by the actors, mapped to gRPC codes / HTTP statuses by the gateway."""

from __future__ import annotations

from typing import Any

from rayinfra._deprecation import renamed


class InvalidArgumentError(ValueError):
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


class NotTrustedError(InvalidArgumentError):
    """The request runs code and the caller is not trusted (gRPC PERMISSION_DENIED, HTTP 403)."""


class ClassPolicyError(NotTrustedError):
    """The task's class does not allow what the task asks for (a ``shell`` payload in a class
    without ``allow_shell``), whoever the caller: gRPC PERMISSION_DENIED and HTTP 403 naming the
    field, like :class:`NotTrustedError` (so a client catching that catches this), but a token
    does not help: the class's config, or another class, does."""


class TaskConflictError(InvalidArgumentError):
    """A task id already exists with a different spec (gRPC ALREADY_EXISTS, HTTP 409)."""


class BackendUnavailableError(RuntimeError):
    """The request needs a backend that is not available (gRPC FAILED_PRECONDITION, HTTP 503)."""


class TaskNotFoundError(KeyError):
    """No task with that id (gRPC NOT_FOUND, HTTP 404; the Python client raises it too)."""

    def __str__(self) -> str:
        return f"task {self.args[0]!r} not found" if self.args else "task not found"


class WorkflowNotFoundError(KeyError):
    """No workflow with that id (gRPC NOT_FOUND, HTTP 404)."""

    FIELD = "workflow_id"
    WHAT = "workflow"

    def __str__(self) -> str:
        return f"{self.WHAT} {self.args[0]!r} not found" if self.args else f"{self.WHAT} not found"


class WorkflowRunNotFoundError(WorkflowNotFoundError):
    """No workflow run with that id (gRPC NOT_FOUND, HTTP 404)."""

    FIELD = "run_id"
    WHAT = "workflow run"


class UnavailableError(RuntimeError):
    """A control actor cannot be reached right now (gRPC UNAVAILABLE, HTTP 503)."""


class PermissionDeniedError(RuntimeError):
    """The caller may not do this (gRPC PERMISSION_DENIED, HTTP 403)."""


class QueueFullError(RuntimeError):
    """Too much of this kind of work is queued already (gRPC RESOURCE_EXHAUSTED, HTTP 429): the
    request queued nothing; it may be sent again once some of that work has ended."""


class StorageFullError(RuntimeError):
    """The state store's disk is full (gRPC RESOURCE_EXHAUSTED, HTTP 507): the request wrote
    nothing, and writes resume once there is space. ``path`` is the store's directory."""

    PREFIX = "the state store's disk is full ("

    def __init__(self, path: str) -> None:
        super().__init__(f"{self.PREFIX}{path}): nothing was written; free space there, try again")
        self.path = path


__getattr__ = renamed(
    __name__,
    {
        old: f"{old}Error"
        for old in (
            "InvalidArgument", "NotTrusted", "TaskConflict", "BackendUnavailable",
            "TaskNotFound", "Unavailable", "PermissionDenied",
        )
    },
)  # fmt: skip

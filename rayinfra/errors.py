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

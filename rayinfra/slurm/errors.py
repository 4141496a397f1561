"""Errors of the Slurm layer: a person reading one knows what to fix or where to look.

Each pickles with its fields intact, so it survives a trip through Ray."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rayinfra.errors import BackendUnavailableError

__all__ = [
    "SlurmCommandError",
    "SlurmError",
    "SlurmParseError",
    "SlurmTimeoutError",
    "SlurmUnavailableError",
]


class SlurmError(RuntimeError):
    """Base class of every error raised by :mod:`rayinfra.slurm`."""


class SlurmUnavailableError(SlurmError, BackendUnavailableError):
    """Slurm cannot be used here: a command is not installed or the controller does not answer.

    The message names what is missing (the binary, or the controller and what the command said).
    The gateway maps it like any unavailable backend (gRPC FAILED_PRECONDITION, HTTP 503).
    """


class SlurmTimeoutError(SlurmUnavailableError):
    """A Slurm command did not finish within its timeout (an overloaded or hung controller)."""

    def __init__(self, argv: Sequence[str], timeout_s: float) -> None:
        super().__init__(
            f"`{' '.join(argv)}` did not finish within {timeout_s:g} s; is slurmctld overloaded? "
            "(`scontrol ping` shows whether it answers)"
        )
        self.argv = tuple(argv)
        self.timeout_s = timeout_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.argv, self.timeout_s))


class SlurmCommandError(SlurmError):
    """A Slurm command ran and failed: its argv, exit code and stderr are kept."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        detail = stderr.strip() or "(no stderr)"
        super().__init__(f"`{' '.join(argv)}` exited with code {returncode}: {detail}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.argv, self.returncode, self.stderr))


class SlurmParseError(SlurmError, ValueError):
    """A Slurm command printed something this layer does not understand (the text is quoted)."""

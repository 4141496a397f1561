"""Checks of values that go into sbatch scripts: each returns the value or raises
:class:`~rayinfra.errors.InvalidArgumentError` (a ValueError) naming the field. Pure."""

from __future__ import annotations

import re
import shlex

from rayinfra.errors import InvalidArgumentError

__all__ = [
    "ENV_NAME",
    "INTERFACE",
    "PARTITIONS",
    "SBATCH_OPTION",
    "SBATCH_WORD",
    "SIMPLE_NAME",
    "SLURM_TIME",
    "assign",
    "integer",
    "matching",
    "sbatch_path",
    "slurm_time",
    "text_field",
]

SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
PARTITIONS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}(,[A-Za-z0-9][A-Za-z0-9_.+-]{0,127})*")
SLURM_TIME = re.compile(
    r"\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
    r"|UNLIMITED|INFINITE"
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
#: an option added to the #SBATCH header: ``--name`` or ``--name=value`` with a plain value
SBATCH_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(=[^\s\"'\\]+)?")
#: a value that needs no quoting in an #SBATCH line
SBATCH_WORD = re.compile(r"[A-Za-z0-9_./~+@%:=,-]+")
_UNSAFE_TEXT = ("\0", "\n", "\r")


def text_field(name: str, value: object, *, allow_empty: bool = False) -> str:
    """A string without NUL or line breaks."""
    if not isinstance(value, str):
        raise InvalidArgumentError(name, f"must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidArgumentError(name, "must not be empty")
    if any(c in value for c in _UNSAFE_TEXT):
        raise InvalidArgumentError(name, f"must not contain NUL or line breaks: {value!r}")
    return value


def matching(name: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    """A string that ``pattern`` matches in full; ``what`` says what was expected."""
    text = text_field(name, value)
    if not pattern.fullmatch(text):
        raise InvalidArgumentError(name, f"{what}, got {text!r}")
    return text


def integer(name: str, value: object, minimum: int) -> int:
    """An integer >= ``minimum`` (also given as digits or a whole float; never a bool)."""
    if isinstance(value, bool):
        raise InvalidArgumentError(name, f"must be an integer >= {minimum}, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def slurm_time(name: str, value: object) -> str:
    """A Slurm time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``, ``UNLIMITED``."""
    return matching(
        name,
        value,
        SLURM_TIME,
        "must be a Slurm time (MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]], UNLIMITED)",
    )


def sbatch_path(name: str, value: str) -> str:
    """A path for an ``#SBATCH`` line: sbatch splits on spaces and honours quotes, so a path with
    spaces or ``'`` is double-quoted; ``"`` and ``\\`` have no safe spelling and are refused."""
    text_field(name, value)
    if '"' in value or "\\" in value:
        raise InvalidArgumentError(name, f'must not contain " or \\ (an #SBATCH line): {value!r}')
    return value if SBATCH_WORD.fullmatch(value) else f'"{value}"'


def assign(var: str, value: str, *, export: bool = True) -> str:
    """``export VAR='value'``: a shell assignment whose value is data, never code."""
    return f"{'export ' if export else ''}{var}={shlex.quote(value)}"

"""JSON that came from outside: parsed with a bound on its nesting, optionally without NaN/Infinity.

``json.loads`` recurses once per nested array/object and raises RecursionError only when it
reaches the interpreter's limit. Reaching that limit is not safe in a long-lived process: while
Python builds the RecursionError it may run a garbage collection, and a collection callback or
finalizer that calls Python code at that depth aborts the whole process ("Fatal Python error:
Cannot recover from stack overflow"). :func:`loads` measures the nesting first, in C-speed
passes over the text, and refuses anything deeper than :data:`MAX_DEPTH` with a ValueError that
says so, before the parser recurses at all.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deepest nesting of arrays/objects parsed. Far below the interpreter's recursion limit (1000)
#: plus the frames of any caller; payloads have their own, lower bound (``MAX_PAYLOAD_DEPTH``).
MAX_DEPTH = 512

# A JSON string, as the parser skips it: one token, escapes included. One that is never closed
# runs to the end of the text (the parser stops there, so nothing after it counts). Every quote
# thus starts a match and nothing backtracks: linear in the text, however it is made.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)


class NestingError(ValueError):
    """JSON nested deeper than :data:`MAX_DEPTH` (or the bound a caller passed)."""


def deeper_than(text: str, limit: int) -> bool:
    """Whether arrays/objects in ``text`` nest deeper than ``limit``: exact for valid JSON; for
    invalid JSON never False where the parser would descend deeper before its first error.

    Linear and mostly in C: strings are cut out (brackets in them do not count), then the text
    is walked in chunks whose brackets are counted with ``str.count``; a chunk is looked at
    character by character only when it could take the depth past ``limit``. Wide JSON (a
    million brackets, a few levels deep) costs a few milliseconds per megabyte."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than it has opening brackets: most texts stop here
    outside = _STRING.sub("", text) if '"' in text else text
    step = max(16, limit // 2)
    depth = 0
    for i in range(0, len(outside), step):
        chunk = outside[i : i + step]
        opens = chunk.count("[") + chunk.count("{")
        if depth + opens <= limit:
            depth += opens - chunk.count("]") - chunk.count("}")
            continue
        for c in chunk:
            if c == "[" or c == "{":
                depth += 1
                if depth > limit:
                    return True
            elif c == "]" or c == "}":
                depth -= 1
    return False


def _text(data: str | bytes | bytearray) -> str:
    if isinstance(data, str):
        return data
    # what json.loads does with bytes: UTF-8, -16 or -32 by the first bytes
    return bytes(data).decode(json.detect_encoding(data), "surrogatepass")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf
        raise ValueError(f"{text} is out of range")
    return value


def loads(
    data: str | bytes | bytearray, *, finite: bool = False, max_depth: int = MAX_DEPTH
) -> Any:
    """``json.loads`` for input from outside. ValueError (JSONDecodeError, UnicodeDecodeError or
    :class:`NestingError`) for anything that is not JSON nested at most ``max_depth`` levels;
    ``finite``: NaN, Infinity and numbers that overflow to infinity are refused too."""
    text = _text(data)
    if deeper_than(text, max_depth):
        raise NestingError(f"nested deeper than {max_depth} levels")
    if finite:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    return json.loads(text)

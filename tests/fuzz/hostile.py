"""Hostile values for the fuzzers: strings, numbers and JSON that have broken servers before.

Ids of 10,000 characters, ``../`` path traversal (plain, percent-encoded, Windows-style) in ids,
log and service names and paths, NUL bytes, the names of the runtime's own actors and services,
negative, NaN and infinite numbers, integers at and past their type's range, JSON nested far
deeper than any parser's recursion limit, huge arrays, ``NaN``/``Infinity`` literals, and bytes
that are not UTF-8.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")
LONG = 10_000
TRAVERSAL = (
    "..",
    "../",
    "../../../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f",
    "..%2f..%2f",
    "....//....//",
    "a/../../b",
    "./.",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
)
STRINGS: tuple[str, ...] = (
    "",
    " ",
    "a",
    *TRAVERSAL,
    "a" * LONG,
    "../" * (LONG // 3 + 1),
    "é" * (LONG // 2),
    "\x00",
    "a\x00b",
    "\r\n",
    "\u202e\u0000\ufeff",
    "\U0001f4a9",
    "${input.x}",
    "${steps.a.result}",
    "; rm -rf /",
    "$(id)",
    "`id`",
    "* ? [ ] { } | & < >",
    "%s%n%x",
    "{}",
    "[]",
    "null",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1",
    "0",
    "9" * 5000,
    "true",
    "True",
    '{"type": "noop"}',
    # names that mean something to the runtime
    "scheduler",
    "gateway",
    "service_registry",
    "executor-cpu_short-0",
    "executor-../../x",
    "kv",
    "cpu_short",
    "gpu",
    "gpu_slurm",
    "noop",
    "echo",
    "sleep",
    "shell",
    "python",
    "completed",
    "pending",
)
#: map keys a payload gives meaning to (and a few it does not)
PAYLOAD_KEYS = ("type", "payload_json", "task_type", "argv", "command", "seconds", "cwd", "env")
INVALID_UTF8: tuple[bytes, ...] = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",  # an over-long NUL
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"abc\x80",
    b"\xe2\x82",  # cut short
)


def pick(values: Sequence[T]) -> st.SearchStrategy[T]:
    """One of ``values`` (``sampled_from`` without a repr of them all: some are 100 kB)."""
    return st.integers(0, len(values) - 1).map(values.__getitem__)


def _text_of(raw: bytes) -> str:
    """Text from drawn bytes (one hypothesis choice, where ``st.text`` makes one a character):
    by the first byte, the rest as UTF-8 (invalid bytes replaced), as Latin-1 (controls and
    all), or two bytes a character anywhere in Unicode past ASCII (no surrogates)."""
    if not raw:
        return ""
    how, rest = raw[0] % 3, raw[1:]
    if how == 0:
        return rest.decode("utf-8", "replace")
    if how == 1:
        return rest.decode("latin-1")
    points = (
        0x80 + (rest[i] << 8 | rest[i + 1]) * 17 % 0x10F000 for i in range(0, len(rest) - 1, 2)
    )
    return "".join(chr(p + 0x800 if 0xD800 <= p < 0xE000 else p) for p in points)


_TEXTS = st.one_of(pick(STRINGS), st.binary(max_size=25).map(_text_of))
_KEYS = st.one_of(pick(PAYLOAD_KEYS), _TEXTS)


def texts(field: str = "") -> st.SearchStrategy[str]:
    """A string field's value: a known troublemaker, or any text (map keys: often a payload
    key that means something)."""
    return _KEYS if field in ("key", "payload") else _TEXTS


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (lo, hi, -1, 0, 1, 2**31 - 1, -(2**31), 2**31, 60, 61) if lo <= v <= hi]
    return st.one_of(pick(edges), st.integers(lo, hi))


def floats(width: int = 64) -> st.SearchStrategy[float]:
    edges = [float("nan"), float("inf"), float("-inf"), -0.0, -1.0, 1e-300, 1e308, 60.0, 60.5]
    return st.one_of(pick(edges), st.floats(width=width))  # type: ignore[arg-type]


_SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, -0.0, 1e308, -1e-300, 5e-324)
_HUGE_INTS = (2**63, -(2**63) - 1, 2**64, 10**400, -(10**30))


class _Bytes:
    """Drawn bytes read one decision at a time (0 once they run out)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.at = 0

    def next(self) -> int:
        self.at += 1
        return self.raw[self.at - 1] if self.at <= len(self.raw) else 0

    def take(self, n: int) -> bytes:
        out = self.raw[self.at : self.at + n]
        self.at += n
        return out


def json_from_bytes(raw: bytes) -> Any:
    """A JSON value decoded from drawn bytes: one hypothesis choice for a whole tree (a
    recursive strategy makes one per node, which is most of a fuzz example's cost), shrinking
    towards ``null`` as the bytes do. NaN, infinities, integers past 64 bits, hostile strings,
    nested lists and objects with payload keys."""
    return _json_value(_Bytes(raw), 0)


def _json_value(b: _Bytes, depth: int) -> Any:
    op = b.next() % (12 if depth < 4 else 8)
    if op == 0:
        return None
    if op == 1:
        return bool(b.next() % 2)
    if op == 2:
        return int.from_bytes(b.take(2), "big", signed=True)
    if op == 3:
        return _HUGE_INTS[b.next() % len(_HUGE_INTS)]
    if op == 4:
        return _SPECIAL_FLOATS[b.next() % len(_SPECIAL_FLOATS)]
    if op == 5:
        return struct.unpack("<d", (b.take(8) + bytes(8))[:8])[0]
    if op == 6:
        return STRINGS[b.next() % len(STRINGS)]
    if op == 7:
        return _text_of(b.take(b.next() % 16))
    if op in (8, 9):
        return [_json_value(b, depth + 1) for _ in range(b.next() % 5)]
    keys = PAYLOAD_KEYS + STRINGS
    return {keys[b.next() % len(keys)]: _json_value(b, depth + 1) for _ in range(b.next() % 5)}


def _deep(depth: int, opener: str, closer: str) -> str:
    return opener * depth + closer * depth


#: JSON texts that are hard on a parser (deep, wide, huge numbers) or on what reads the result
HARD_JSON: tuple[str, ...] = (
    _deep(1_000, "[", "]"),
    _deep(100_000, "[", "]"),
    _deep(50_000, '{"a":', "}").replace("}", "1}", 1),
    "[" * 100_000,  # never closed
    "[" + "0," * 100_000 + "0]",
    "{" + ",".join(f'"k{i}": {i}' for i in range(20_000)) + "}",
    "1" * 5_000,
    '{"a": 1e999, "b": -1e999, "c": NaN}',
    '{"a": 1, "a": 2}',
    '{"type": "noop"} trailing',
    "\ufeff{}",
    "",
)


_JSON_VALUES = st.binary(max_size=48).map(json_from_bytes)
_JSON_TEXTS = st.one_of(
    _JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True)), pick(HARD_JSON), _TEXTS
)
_JSON_BYTES = st.one_of(
    _JSON_TEXTS.map(str.encode),
    pick(INVALID_UTF8).map(lambda b: b'{"id": "' + b + b'", "name": "x"}'),
    st.binary(max_size=32),
)


def json_values() -> st.SearchStrategy[Any]:
    """JSON values (NaN, infinities and integers past 64 bits included), a few levels deep."""
    return _JSON_VALUES


def json_texts() -> st.SearchStrategy[str]:
    """JSON-ish text: generated values (NaN and infinities as literals), or a hard case."""
    return _JSON_TEXTS


def json_bytes() -> st.SearchStrategy[bytes]:
    """JSON-ish bytes: :func:`json_texts`, or JSON whose strings are not UTF-8."""
    return _JSON_BYTES

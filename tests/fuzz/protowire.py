"""Protobuf requests for the gRPC fuzzer, built from the generated descriptors.

Three kinds of request bytes, mixed by :func:`request_bytes`:

- random bytes (mostly not protobuf at all);
- well-formed messages built with the real message class, every field given a hostile value of
  its type (:mod:`tests.fuzz.hostile`): 10k-character and ``../`` strings, negative, NaN and
  infinite numbers, huge and deep JSON in ``bytes`` and map values, long repeated fields;
- such a message damaged at the wire level (:func:`damage`): a string field whose bytes are not
  UTF-8 (the message classes refuse to build one, so it is written by hand), a known field with
  the wrong wire type, unknown fields (groups included, nested past protobuf's recursion
  limit), a length prefix longer than the message, an over-long varint, field number 0, wire
  types 6 and 7, or the message cut short.

Every strategy is derived from a ``Descriptor``: a field or method added to the protos is
fuzzed without a change here.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from tests.fuzz import hostile

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_FIELD_NUMBER = 2**29 - 1
#: protobuf's parsers refuse messages nested deeper than 100
NESTING_PAST_THE_LIMIT = 150

F = FieldDescriptor
_INT_RANGES: dict[int, tuple[int, int]] = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
#: the wire type a field of each type is written with
_WIRE_TYPE = {
    **dict.fromkeys((F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64), VARINT),
    **dict.fromkeys((F.TYPE_SINT32, F.TYPE_SINT64, F.TYPE_BOOL, F.TYPE_ENUM), VARINT),
    **dict.fromkeys((F.TYPE_FIXED64, F.TYPE_SFIXED64, F.TYPE_DOUBLE), I64),
    **dict.fromkeys((F.TYPE_FIXED32, F.TYPE_SFIXED32, F.TYPE_FLOAT), I32),
    **dict.fromkeys((F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE), LEN),
}


# ----------------------------------------------------------------------------- wire encoding


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint; a negative ``n`` as its 64-bit two's complement (10 bytes)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def length_delimited(number: int, data: bytes) -> bytes:
    return key(number, LEN) + varint(len(data)) + data


def string_fields(desc: Descriptor, prefix: str = "") -> list[tuple[str, FieldDescriptor]]:
    """Every string field reachable from ``desc`` (map keys and values included), by path."""
    out = []
    for f in desc.fields:
        if f.type == F.TYPE_STRING:
            out.append((prefix + f.name, f))
        elif f.type == F.TYPE_MESSAGE and len(prefix.split(".")) < 3:
            out += string_fields(f.message_type, f"{prefix}{f.name}.")
    return out


# ----------------------------------------------------------------------------- messages


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = f.type
    if t == F.TYPE_STRING:
        return hostile.texts(f.name)
    if t == F.TYPE_BYTES:
        return hostile.json_bytes()
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return hostile.floats(width=64 if t == F.TYPE_DOUBLE else 32)
    if t == F.TYPE_ENUM:  # unknown values included: proto3 enums are open
        return st.integers(-(2**31), 2**31 - 1)
    lo, hi = _INT_RANGES[t]
    return hostile.integers(lo, hi)


def _field(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if f.type == F.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
        k, v = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        values = _field(v, depth + 1) if v.type == F.TYPE_MESSAGE else _scalar(v)
        if v.type == F.TYPE_STRING:  # a map<string,string> carries JSON-ish text
            values = st.one_of(values, hostile.json_texts())
        return st.dictionaries(_scalar(k), values, max_size=6)
    one = message_dicts(f.message_type, depth + 1) if f.type == F.TYPE_MESSAGE else _scalar(f)
    if f.is_repeated:  # a few hostile items, or many copies of one (cheap to draw)
        most = 64 if f.type == F.TYPE_MESSAGE else 2000
        many = st.tuples(one, st.integers(most // 10, most)).map(lambda t: [t[0]] * t[1])
        return st.one_of(st.lists(one, max_size=4), many)
    return one


def message_dicts(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for ``desc``'s class: some fields set, each to a hostile value."""
    if depth > 2 or not desc.fields:
        return st.just({})
    return st.fixed_dictionaries({}, optional={f.name: _field(f, depth) for f in desc.fields})


@functools.cache
def messages(cls: type) -> st.SearchStrategy[Any]:
    """Well-formed instances of the message class ``cls`` with hostile field values."""
    return message_dicts(cls.DESCRIPTOR).map(lambda kw: cls(**kw))


# ----------------------------------------------------------------------------- damage


DAMAGE = (
    "invalid-utf8",
    "wrong-wire-type",
    "unknown",
    "bad-length",
    "overlong-varint",
    "field-zero",
    "bad-wire-type",
    "groups",
)


def damage(desc: Descriptor, kind: str, n: int, blob: bytes) -> bytes:
    """One piece of wire-level damage for a message of type ``desc``, to insert into one;
    ``n`` and ``blob`` are the drawn values it is made of (what hypothesis shrinks)."""
    strings = string_fields(desc)
    fields = list(desc.fields)
    if kind == "invalid-utf8" and strings:
        path, f = strings[n % len(strings)]
        data = length_delimited(f.number, hostile.INVALID_UTF8[n % len(hostile.INVALID_UTF8)])
        # a map key/value or a nested message's field: wrap it in its parents
        top, parents = desc, []
        for name in path.split(".")[:-1]:
            parent = top.fields_by_name[name]
            parents.append(parent)
            top = parent.message_type
        for parent in reversed(parents):
            data = length_delimited(parent.number, data)
        return data
    if kind == "wrong-wire-type" and fields:
        f = fields[n % len(fields)]
        right = _WIRE_TYPE.get(f.type, LEN)
        wrong = [w for w in (VARINT, I64, LEN, I32) if w != right][n % 3]
        return key(f.number, wrong) + _value_of_wire_type(wrong, n, blob)
    if kind == "unknown" or kind in ("invalid-utf8", "wrong-wire-type"):
        number = 1 + n % MAX_FIELD_NUMBER
        if number in _numbers(desc):
            number = MAX_FIELD_NUMBER
        wire = (VARINT, I64, LEN, I32)[n % 4]
        return key(number, wire) + _value_of_wire_type(wire, n, blob)
    if kind == "bad-length":  # claims more bytes than follow
        return key(1 + n % 64, LEN) + varint(2 + n % 2**32) + blob[:1]
    if kind == "overlong-varint":
        return key(1 + n % 64, VARINT) + b"\xff" * (10 + n % 11)
    if kind == "field-zero":
        return key(0, (VARINT, LEN)[n % 2]) + b"\x00"
    if kind == "bad-wire-type":
        return key(1 + n % 64, 6 + n % 2) + b"\x00"
    # groups: unknown start-group fields, balanced or not, some nested past the limit
    number = 1000 + n % 1000
    depth = (1, 3, NESTING_PAST_THE_LIMIT)[n % 3]
    balanced = n % 2 == 0
    return key(number, SGROUP) * depth + (key(number, EGROUP) * depth if balanced else b"")


def _value_of_wire_type(wire_type: int, n: int, blob: bytes) -> bytes:
    """Well-formed bytes after a key of ``wire_type``, from drawn values."""
    if wire_type == VARINT:
        return varint(n - 2**31)
    if wire_type == I64:
        return (blob + bytes(8))[:8]
    if wire_type == I32:
        return (blob + bytes(4))[:4]
    return varint(len(blob)) + blob


def _numbers(desc: Descriptor) -> set[int]:
    return {f.number for f in desc.fields}


def _damaged(cls: type, m: Any, kind: str, n: int, blob: bytes, where: str) -> bytes:
    """``m`` serialized, then cut short (at ``n``) or with a piece of damage inserted at its
    start or end."""
    data = bytes(m.SerializeToString())
    if where == "cut":
        return data[: n % max(1, len(data))]
    piece = damage(cls.DESCRIPTOR, kind, n, blob)
    return piece + data if where == "start" else data + piece


@functools.cache
def damaged(cls: type) -> st.SearchStrategy[bytes]:
    """A well-formed hostile message of ``cls`` with wire-level damage, or cut short."""
    return st.builds(
        _damaged,
        st.just(cls),
        messages(cls),
        hostile.pick(DAMAGE),
        st.integers(0, 2**32),
        st.binary(max_size=16),
        hostile.pick(["start", "end", "end", "cut"]),
    )


@functools.cache
def request_bytes(cls: type) -> st.SearchStrategy[bytes]:
    """Any of: random bytes, a well-formed hostile ``cls``, a damaged one."""
    return st.one_of(
        st.binary(max_size=64),
        messages(cls).map(lambda m: bytes(m.SerializeToString())),
        damaged(cls),
    )

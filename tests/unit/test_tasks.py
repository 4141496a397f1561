"""Unit tests for rayinfra.scheduling.tasks: spec validation, identity, and the gRPC wire mapping."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayinfra.scheduling.tasks import (
    MAX_PAYLOAD_DEPTH,
    SPEC_FIELDS,
    TASK_STATES,
    TERMINAL_STATES,
    TRUSTED_TYPES,
    InvalidArgumentError,
    TaskSpec,
    decode_timeout_seconds,
    decode_wire_payload,
    encode_wire_result,
    is_valid_task_id,
    validate_spec,
)

CLASSES = ("cpu_short", "cpu_long", "gpu_short", "gpu_long", "gpu_slurm")
ALIASES = {"gpu": "gpu_short"}
LIMIT = 1000


class IdGen:
    """Deterministic ``new_id`` that records how often it was called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"gen-{self.calls}"


def validate(raw: Mapping[str, Any], *, trusted: bool = False, limit: int = LIMIT) -> TaskSpec:
    return validate_spec(
        raw,
        classes=CLASSES,
        aliases=ALIASES,
        default_class="cpu_short",
        payload_limit_bytes=limit,
        new_id=IdGen(),
        trusted=trusted,
    )


def test_constants() -> None:
    assert TASK_STATES == ("pending", "running", "completed", "failed", "cancelled")
    assert {"completed", "failed", "cancelled"} == TERMINAL_STATES
    assert set(TASK_STATES) > TERMINAL_STATES
    assert {"shell", "python"} == TRUSTED_TYPES


def test_invalid_argument_carries_field_and_pickles() -> None:
    e = InvalidArgumentError("timeout_s", "must be > 0")
    assert isinstance(e, ValueError)
    assert e.field == "timeout_s" and str(e) == "timeout_s: must be > 0"
    back = pickle.loads(pickle.dumps(e))  # crosses Ray as a pickled exception
    assert type(back) is InvalidArgumentError
    assert back.field == "timeout_s" and str(back) == "timeout_s: must be > 0"


# ------------------------------------------------------------------ validate_spec: the happy path


def test_minimal_spec_gets_defaults_and_generated_id() -> None:
    gen = IdGen()
    spec = validate_spec(
        {},
        classes=CLASSES,
        aliases=ALIASES,
        default_class="cpu_short",
        payload_limit_bytes=LIMIT,
        new_id=gen,
        trusted=False,
    )
    assert spec == TaskSpec(task_id="gen-1", task_class="cpu_short", payload={})
    assert spec.priority == 0 and spec.workflow_id == "" and spec.timeout_s is None
    assert gen.calls == 1


@pytest.mark.parametrize("raw_id", ["", None])
def test_empty_or_null_id_is_generated(raw_id: str | None) -> None:
    gen = IdGen()
    spec = validate_spec(
        {"task_id": raw_id},
        classes=CLASSES,
        aliases=ALIASES,
        default_class="cpu_short",
        payload_limit_bytes=LIMIT,
        new_id=gen,
        trusted=False,
    )
    assert spec.task_id == "gen-1" and gen.calls == 1


def test_given_id_is_kept_and_no_id_generated() -> None:
    gen = IdGen()
    spec = validate_spec(
        {"task_id": "job-1"},
        classes=CLASSES,
        aliases=ALIASES,
        default_class="cpu_short",
        payload_limit_bytes=LIMIT,
        new_id=gen,
        trusted=False,
    )
    assert spec.task_id == "job-1" and gen.calls == 0


def test_full_spec() -> None:
    spec = validate(
        {
            "task_id": "user@host:run-1.part_2",
            "task_class": "gpu_long",
            "payload": {"type": "echo", "x": [1, 2.5, None, True], "n": {"k": "v"}},
            "priority": -7,
            "workflow_id": "wf-1",
            "timeout_s": 12,
        }
    )
    assert spec.task_id == "user@host:run-1.part_2"
    assert spec.task_class == "gpu_long"
    assert spec.payload == {"type": "echo", "x": [1, 2.5, None, True], "n": {"k": "v"}}
    assert spec.priority == -7 and spec.workflow_id == "wf-1"
    assert spec.timeout_s == 12.0 and isinstance(spec.timeout_s, float)


@pytest.mark.parametrize(
    ("given_class", "expected"),
    [
        ("gpu", "gpu_short"),
        ("gpu_short", "gpu_short"),
        ("cpu_long", "cpu_long"),
        ("", "cpu_short"),
        (None, "cpu_short"),
    ],
)
def test_class_alias_and_default(given_class: str | None, expected: str) -> None:
    assert validate({"task_class": given_class}).task_class == expected


def test_payload_is_detached_from_the_caller_and_normalised() -> None:
    inner = [1, 2]
    payload: dict[str, Any] = {"a": inner, "t": (1, "x")}
    spec = validate({"payload": payload})
    inner.append(3)
    payload["b"] = 1
    assert spec.payload == {"a": [1, 2], "t": [1, "x"]}


def test_unknown_payload_type_is_accepted_at_submit() -> None:
    assert validate({"payload": {"type": "no-such-handler"}}).payload["type"] == "no-such-handler"


@pytest.mark.parametrize("ptype", sorted(TRUSTED_TYPES))
def test_trusted_types_need_a_trusted_caller(ptype: str) -> None:
    raw = {"payload": {"type": ptype, "argv": ["true"]}}
    with pytest.raises(InvalidArgumentError) as info:
        validate(raw, trusted=False)
    assert info.value.field == "payload.type"
    assert str(info.value) == (
        f"payload.type: {ptype!r} tasks run code and need an authenticated caller"
    )
    assert validate(raw, trusted=True).payload["type"] == ptype


@pytest.mark.parametrize("ptype", ["Shell", " python", "PYTHON\n"])
def test_trusted_gate_is_not_fooled_by_case_or_spaces(ptype: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate({"payload": {"type": ptype}}, trusted=False)
    assert info.value.field == "payload.type"


def test_untrusted_callers_may_submit_other_types() -> None:
    for ptype in ("noop", "echo", "sleep", "shellish", "no-such-handler"):
        assert validate({"payload": {"type": ptype}}, trusted=False).payload["type"] == ptype


# ------------------------------------------------------------------ validate_spec: every rejection

BAD_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, raw, field, a fragment of the message)
    ("unknown key", {"bogus": 1}, "bogus", "unknown field 'bogus'"),
    ("wire name hint", {"id": "x"}, "id", "did you mean 'task_id'?"),
    ("http class name", {"class": "gpu"}, "class", "did you mean 'task_class'?"),
    ("id not a string", {"task_id": 5}, "task_id", "must be a string"),
    ("id with slash", {"task_id": "a/b"}, "task_id", "not a valid id"),
    ("id is dotdot", {"task_id": ".."}, "task_id", "not a valid id"),
    ("id is dot", {"task_id": "."}, "task_id", "not a valid id"),
    ("id contains dotdot", {"task_id": "a..b"}, "task_id", "not a valid id"),
    ("id hidden file", {"task_id": ".x"}, "task_id", "not a valid id"),
    ("id looks like an option", {"task_id": "-rf"}, "task_id", "not a valid id"),
    ("id with space", {"task_id": "a b"}, "task_id", "not a valid id"),
    ("id with newline", {"task_id": "ab\n"}, "task_id", "not a valid id"),
    ("id with backslash", {"task_id": "a\\b"}, "task_id", "not a valid id"),
    ("id non-ascii", {"task_id": "tâche"}, "task_id", "not a valid id"),
    ("id too long", {"task_id": "a" * 257}, "task_id", "1..256 characters"),
    ("class unknown", {"task_class": "tpu"}, "task_class", "unknown class 'tpu'"),
    ("class wrong case", {"task_class": "GPU"}, "task_class", "unknown class 'GPU'"),
    ("class not a string", {"task_class": 3}, "task_class", "must be a string"),
    ("payload a list", {"payload": [1]}, "payload", "must be a JSON object, got list"),
    ("payload a string", {"payload": '{"a":1}'}, "payload", "must be a JSON object, got str"),
    ("payload NaN", {"payload": {"x": math.nan}}, "payload", "at x is nan"),
    ("payload inf nested", {"payload": {"a": [1, {"b": math.inf}]}}, "payload", "a[1].b is inf"),
    ("payload -inf", {"payload": {"x": -math.inf}}, "payload", "JSON has no NaN or Infinity"),
    ("payload int key", {"payload": {1: "a"}}, "payload", "key 1 at the top level is not a str"),
    ("payload nested key", {"payload": {"a": {None: 1}}}, "payload", "key None at a is not"),
    ("payload set", {"payload": {"s": {1, 2}}}, "payload", "type 'set', which is not JSON"),
    ("payload bytes", {"payload": {"b": b"x"}}, "payload", "type 'bytes'"),
    ("payload surrogate", {"payload": {"s": "\ud800"}}, "payload", "lone surrogate"),
    ("payload type int", {"payload": {"type": 1}}, "payload.type", "must be a string, got int"),
    ("payload type null", {"payload": {"type": None}}, "payload.type", "must be a string"),
    ("priority float", {"priority": 1.0}, "priority", "must be an integer"),
    ("priority str", {"priority": "1"}, "priority", "must be an integer"),
    ("priority bool", {"priority": True}, "priority", "must be an integer, got bool"),
    ("priority too high", {"priority": 1_000_001}, "priority", "out of range"),
    ("priority too low", {"priority": -1_000_001}, "priority", "out of range"),
    ("workflow not str", {"workflow_id": 7}, "workflow_id", "must be a string"),
    ("workflow surrogate", {"workflow_id": "w\udfff"}, "workflow_id", "lone surrogate"),
    ("timeout zero", {"timeout_s": 0}, "timeout_s", "must be > 0"),
    ("timeout negative", {"timeout_s": -1.5}, "timeout_s", "must be > 0"),
    ("timeout nan", {"timeout_s": math.nan}, "timeout_s", "must be > 0"),
    ("timeout inf", {"timeout_s": math.inf}, "timeout_s", "must be > 0"),
    ("timeout str", {"timeout_s": "5"}, "timeout_s", "must be > 0"),
    ("timeout bool", {"timeout_s": True}, "timeout_s", "must be > 0"),
]


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_every_rejection_names_its_field(raw: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate(raw, trusted=True)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"priority": 10**5000},  # too many digits for str(): the message must still build
        {"priority": "p" * 100_000},
        {"task_class": "c" * 100_000},
        {"task_id": "/" * 100_000},
        {"timeout_s": "t" * 100_000},
        {"k" * 100_000: 1},
        {"payload": {"k" * 100_000: {"x": math.nan}}},
        {"payload": {"type": "shell" + " " * 100_000}},
    ],
)
def test_error_messages_stay_short_for_huge_input(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate(raw)
    assert len(str(info.value)) < 600


def test_unknown_class_lists_classes_and_aliases_sorted() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate({"task_class": "x"})
    assert str(info.value) == (
        "task_class: unknown class 'x'; valid: cpu_long, cpu_short, gpu, gpu_long, gpu_short, "
        "gpu_slurm"
    )


def test_alias_to_a_missing_class_is_unknown() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate_spec(
            {"task_class": "gpu"},
            classes=["cpu_short"],
            aliases=ALIASES,
            default_class="cpu_short",
            payload_limit_bytes=LIMIT,
            new_id=IdGen(),
            trusted=False,
        )
    assert info.value.field == "task_class"
    assert "unknown class 'gpu' (alias of 'gpu_short')" in str(info.value)


def test_several_unknown_keys_are_all_named() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate({"zeta": 1, "alpha": 2, "task_id": "ok"})
    assert info.value.field == "alpha"
    assert "'alpha', 'zeta'" in str(info.value)


def test_raw_must_be_a_mapping() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate([("task_id", "x")])  # type: ignore[arg-type]
    assert info.value.field == "task"


@pytest.mark.parametrize(
    "task_id",
    ["a", "A9", "x" * 256, "user@host:job-1.v2_final", "1.2.3", "a.b", "uuid-0f0e", "a-", "a."],
)
def test_valid_ids(task_id: str) -> None:
    assert is_valid_task_id(task_id)
    assert validate({"task_id": task_id}).task_id == task_id


def test_priority_bounds_are_inclusive() -> None:
    assert validate({"priority": 1_000_000}).priority == 1_000_000
    assert validate({"priority": -1_000_000}).priority == -1_000_000


def test_payload_depth_limit() -> None:
    def nested(depth: int) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for _ in range(depth - 1):
            d = {"a": d}
        return d

    validate({"payload": nested(MAX_PAYLOAD_DEPTH)}, limit=10**6)
    with pytest.raises(InvalidArgumentError) as info:
        validate({"payload": nested(MAX_PAYLOAD_DEPTH + 1)}, limit=10**6)
    assert info.value.field == "payload" and "nested deeper" in str(info.value)
    # Far beyond Python's recursion limit: still a clean InvalidArgumentError, not a RecursionError.
    with pytest.raises(InvalidArgumentError):
        validate({"payload": nested(50_000)}, limit=10**7)


def test_self_referencing_payload_is_rejected() -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(InvalidArgumentError) as info:
        validate({"payload": loop})
    assert info.value.field == "payload"


def _payload_of_size(size: int) -> dict[str, Any]:
    """A payload whose compact UTF-8 JSON is exactly ``size`` bytes (``{"s":"..."}``)."""
    overhead = len('{"s":""}')
    # Use a 2-byte character so the test proves bytes (UTF-8), not characters, are counted.
    two_byte = (size - overhead) // 2
    one_byte = (size - overhead) % 2
    payload = {"s": "é" * two_byte + "x" * one_byte}
    assert len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()) == size
    return payload


def test_payload_size_limit_boundary() -> None:
    at_limit = _payload_of_size(LIMIT)
    assert validate({"payload": at_limit}).payload == at_limit
    with pytest.raises(InvalidArgumentError) as info:
        validate({"payload": _payload_of_size(LIMIT + 1)})
    assert info.value.field == "payload"
    assert f"{LIMIT + 1} bytes" in str(info.value)
    assert f"exceeds the limit of {LIMIT} bytes" in str(info.value)


def test_payload_size_counts_utf8_bytes_not_characters() -> None:
    payload = {"s": "é" * 400}  # 400 characters, 800 bytes in the string alone
    validate({"payload": payload}, limit=808)
    with pytest.raises(InvalidArgumentError):
        validate({"payload": payload}, limit=807)


# ------------------------------------------------------------------ identity and records

BASE = TaskSpec(
    task_id="t1",
    task_class="cpu_short",
    payload={"type": "echo", "a": 1, "b": [1, 2], "c": {"x": "y", "z": None}},
    priority=3,
    workflow_id="wf",
    timeout_s=5.0,
)


def test_identity_is_a_sha256_hex() -> None:
    ident = BASE.identity()
    assert len(ident) == 64 and int(ident, 16) >= 0
    assert ident == BASE.identity()


def test_identity_ignores_payload_key_order_and_the_id() -> None:
    reordered = TaskSpec(
        task_id="other-id",
        task_class="cpu_short",
        payload={"c": {"z": None, "x": "y"}, "b": [1, 2], "a": 1, "type": "echo"},
        priority=3,
        workflow_id="wf",
        timeout_s=5.0,
    )
    assert reordered.identity() == BASE.identity()


@pytest.mark.parametrize(
    "change",
    [
        {"task_class": "cpu_long"},
        {"payload": {**BASE.payload, "a": 2}},
        {"payload": {**BASE.payload, "extra": None}},
        {"payload": {**BASE.payload, "b": [2, 1]}},
        {"priority": 4},
        {"workflow_id": "wf2"},
        {"timeout_s": 6.0},
        {"timeout_s": None},
    ],
)
def test_identity_changes_with_any_field(change: dict[str, Any]) -> None:
    changed = TaskSpec(**{**BASE.to_dict(), **change})
    assert changed.identity() != BASE.identity()


def test_identity_matches_documented_canonical_json() -> None:
    doc = {
        "class": "cpu_short",
        "payload": {"é": "ü"},
        "priority": 0,
        "workflow_id": "",
        "timeout_s": None,
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    import hashlib

    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert TaskSpec("x", "cpu_short", {"é": "ü"}).identity() == expected


def test_identity_same_for_alias_and_int_timeout_after_validation() -> None:
    a = validate({"task_id": "t", "task_class": "gpu", "timeout_s": 5, "payload": {"k": 1}})
    b = validate({"task_id": "t", "task_class": "gpu_short", "timeout_s": 5.0, "payload": {"k": 1}})
    assert a == b and a.identity() == b.identity()


def test_to_dict_from_dict_round_trip() -> None:
    d = BASE.to_dict()
    assert (
        set(d)
        == set(SPEC_FIELDS)
        == {
            "task_id",
            "task_class",
            "payload",
            "priority",
            "workflow_id",
            "timeout_s",
            "runtime_env",
        }
    )
    assert json.loads(json.dumps(d)) == d
    assert TaskSpec.from_dict(d) == BASE
    assert TaskSpec.from_dict(json.loads(json.dumps(d))).identity() == BASE.identity()
    d["payload"]["a"] = 99  # a copy: the spec is unchanged
    assert BASE.payload["a"] == 1


def test_from_dict_defaults_and_ignores_unknown_keys() -> None:
    spec = TaskSpec.from_dict({"task_id": "t", "task_class": "c", "future_field": 1})
    assert spec == TaskSpec("t", "c", {})


@pytest.mark.parametrize(
    "bad",
    [
        {"task_class": "c"},
        {"task_id": "t"},
        {"task_id": 1, "task_class": "c"},
        {"task_id": "t", "task_class": "c", "payload": []},
        {"task_id": "t", "task_class": "c", "priority": "1"},
        {"task_id": "t", "task_class": "c", "workflow_id": None},
        {"task_id": "t", "task_class": "c", "timeout_s": "1"},
    ],
)
def test_from_dict_rejects_malformed_records(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="malformed task record"):
        TaskSpec.from_dict(bad)


def test_spec_is_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        BASE.priority = 1  # type: ignore[misc]
    assert {BASE: 1}[TaskSpec.from_dict(BASE.to_dict())] == 1


# ------------------------------------------------------------------ wire mapping

DECODE_TABLE: list[tuple[str, Any]] = [
    ("1", 1),
    ("-3", -3),
    ("2.5", 2.5),
    ("1e3", 1000.0),
    ("true", True),
    ("false", False),
    ("null", None),
    ('{"a":1}', {"a": 1}),
    ("[1]", [1]),
    ('"x"', "x"),
    (" 7 ", 7),
    ("abc", "abc"),
    ("", ""),
    ("1 2", "1 2"),
    ("True", "True"),
    ("{a:1}", "{a:1}"),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("-Infinity", "-Infinity"),
    ("1e999", "1e999"),
    ("[1, NaN]", "[1, NaN]"),
    ('{"a": Infinity}', '{"a": Infinity}'),
    ("[" * 100_000, "[" * 100_000),
    ("[" * 100_000 + "]" * 100_000, "[" * 100_000 + "]" * 100_000),
]


@pytest.mark.parametrize(
    ("wire", "expected"), DECODE_TABLE, ids=[repr(w)[:20] for w, _ in DECODE_TABLE]
)
def test_decode_wire_values(wire: str, expected: Any) -> None:
    decoded = decode_wire_payload({"k": wire})
    assert decoded == {"k": expected}
    assert type(decoded["k"]) is type(expected)


def test_decode_never_produces_nan_or_infinity() -> None:
    for wire in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "[1e400]", '{"a":NaN}'):
        value = decode_wire_payload({"k": wire})["k"]
        assert value == wire


def test_decode_merges_payload_json_at_the_top_level() -> None:
    decoded = decode_wire_payload(
        {"a": "1", "b": "keep", "payload_json": '{"a": "from-json", "c": [1, 2], "n": null}'}
    )
    assert decoded == {"a": "from-json", "b": "keep", "c": [1, 2], "n": None}


def test_decode_payload_json_wins_regardless_of_map_order() -> None:
    first = decode_wire_payload({"payload_json": '{"a": 2}', "a": "1"})
    last = decode_wire_payload({"a": "1", "payload_json": '{"a": 2}'})
    assert first == last == {"a": 2}


def test_decode_empty_payload_json_object() -> None:
    assert decode_wire_payload({"payload_json": "{}", "x": "y"}) == {"x": "y"}


@pytest.mark.parametrize(
    "bad", ["[1, 2]", '"str"', "1", "null", "not json", "", '{"a": NaN}', "{", "[" * 100_000]
)
def test_decode_rejects_payload_json_that_is_not_an_object(bad: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_wire_payload({"payload_json": bad})
    assert info.value.field == "payload.payload_json"
    assert "must be a JSON object" in str(info.value)


def test_decode_rejects_non_string_values() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_wire_payload({"k": 1})  # type: ignore[dict-item]
    assert info.value.field == "payload.k"


def test_decoded_wire_payload_validates() -> None:
    payload = decode_wire_payload({"type": "sleep", "seconds": "0.5"})
    assert validate({"payload": payload}).payload == {"type": "sleep", "seconds": 0.5}


ENCODE_TABLE: list[tuple[Any, dict[str, str]]] = [
    (None, {}),
    ({}, {}),
    ({"s": "text"}, {"s": "text"}),
    ({"s": "1"}, {"s": "1"}),
    ({"i": 1, "f": 2.5, "b": True, "n": None}, {"i": "1", "f": "2.5", "b": "true", "n": "null"}),
    ({"l": [1, "a"], "d": {"x": [None]}}, {"l": '[1,"a"]', "d": '{"x":[null]}'}),
    ({"u": ["é"]}, {"u": '["é"]'}),
    ("bare", {"result": "bare"}),
    ("", {"result": ""}),
    (3, {"result": "3"}),
    (1.5, {"result": "1.5"}),
    (False, {"result": "false"}),
    ([1, 2], {"result": "[1,2]"}),
]


@pytest.mark.parametrize(("result", "expected"), ENCODE_TABLE)
def test_encode_wire_result(result: Any, expected: dict[str, str]) -> None:
    assert encode_wire_result(result) == expected


@pytest.mark.parametrize("bad", [{"x": math.nan}, {1: "a"}, {"s": {1, 2}}, math.inf, object()])
def test_encode_rejects_non_json_results(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_wire_result(bad)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, None), (0.0, None), (-0.0, None), (1, 1.0), (2.5, 2.5)]
)
def test_decode_timeout_seconds(value: float, expected: float | None) -> None:
    assert decode_timeout_seconds(value) == expected


@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_decode_timeout_seconds_rejects(bad: float) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_timeout_seconds(bad)
    assert info.value.field == "timeout_seconds"


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_json_leaf = st.none() | st.booleans() | st.integers() | st.text()
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.dictionaries(
        # "payload_json" is the one reserved key: the decoder merges it instead of keeping it.
        st.text().filter(lambda k: k != "payload_json"),
        # A top-level string travels unencoded (strings "pass through"), so a string that is itself
        # valid JSON ("1", "true", "null", '"x"', " [] ") is indistinguishable on the wire from the
        # value it spells, and the decoder, by design, returns that value. That ambiguity is the
        # original protocol's; such strings are left out here and pinned by the tables above.
        _json_value.filter(lambda v: not (isinstance(v, str) and _parses_as_json(v))),
        max_size=6,
    )
)
def test_wire_round_trip(d: dict[str, Any]) -> None:
    wire = encode_wire_result(d)
    assert all(isinstance(v, str) for v in wire.values())
    assert decode_wire_payload(wire) == d


def test_per_task_runtime_env() -> None:
    kw = dict(
        classes=["cpu_short"],
        aliases={},
        default_class="cpu_short",
        payload_limit_bytes=1 << 20,
        new_id=lambda: "x",
    )
    env = {"env_vars": {"A": "1"}, "py_modules": ["/x/mod"]}
    spec = validate_spec({"task_id": "t", "payload": {}, "runtime_env": env}, trusted=True, **kw)
    assert spec.runtime_env == env
    plain = validate_spec({"task_id": "t", "payload": {}}, trusted=True, **kw)
    assert spec.identity() != plain.identity()
    # tasks without one keep the identity they always had
    assert (
        validate_spec(
            {"task_id": "t", "payload": {}, "runtime_env": {}}, trusted=True, **kw
        ).identity()
        == plain.identity()
    )
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    for bad, field in (
        ({"pip": ["x"]}, None),
        ({"nope": 1}, "runtime_env"),
        ({"env_vars": {"A": 1}}, "runtime_env.env_vars"),
        ("str", "runtime_env"),
    ):
        if field is None:
            with pytest.raises(InvalidArgumentError) as e:
                validate_spec(
                    {"task_id": "t", "payload": {}, "runtime_env": bad}, trusted=False, **kw
                )
            assert e.value.field == "runtime_env" and "authenticated" in str(e.value)
            continue
        with pytest.raises(InvalidArgumentError) as e:
            validate_spec({"task_id": "t", "payload": {}, "runtime_env": bad}, trusted=True, **kw)
        assert e.value.field == field


_IDENT_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip


@given(
    task_class=st.text(min_size=1),
    payload=st.dictionaries(st.text(), _IDENT_JSON, max_size=4),
    priority=st.integers() | st.floats(allow_nan=False) | st.booleans(),
    workflow_id=st.text(),
    timeout_s=st.none() | st.floats() | st.integers(min_value=1),
    runtime_env=st.none() | st.dictionaries(st.text(), _IDENT_JSON, max_size=3),
)
def test_identity_text_is_the_sorted_document_for_any_spec(
    task_class: str,
    payload: dict[str, Any],
    priority: Any,
    workflow_id: str,
    timeout_s: Any,
    runtime_env: dict[str, Any] | None,
) -> None:
    """The identity is assembled from its parts on the submit path; it must be the text of the
    sorted document (as stored identities were made), whatever the field values."""
    spec = TaskSpec("x", task_class, payload, priority, workflow_id, timeout_s, runtime_env)
    doc = {"class": task_class, "payload": payload, "priority": priority,
           "workflow_id": workflow_id, "timeout_s": timeout_s}  # fmt: skip
    if runtime_env is not None:
        doc["runtime_env"] = runtime_env
    try:
        expected = json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError:
        with pytest.raises(ValueError):
            spec.identity()
        return
    assert spec._canonical() == expected


def test_a_spec_from_its_payload_text_decodes_it_once_and_equals_the_decoded_one() -> None:
    """The scheduler builds specs from stored rows with only the payload's text; the payload
    is decoded on first use and the spec behaves as one built from the object."""
    text = '{"type":"echo","n":[1,2.5,null],"s":"é"}'
    lazy = TaskSpec("t", "cpu_short", None, 3, "wf", 5.0, None, text)
    eager = TaskSpec("t", "cpu_short", json.loads(text), 3, "wf", 5.0)
    assert lazy.payload_json == text and lazy._payload is None  # nothing decoded yet
    assert lazy == eager and hash(lazy) == hash(eager)
    assert lazy.payload is lazy.payload  # decoded once
    assert lazy.identity() == eager.identity() and repr(lazy) == repr(eager)
    for spec in (TaskSpec("t", "cpu_short", None, 0, "", None, None, text), eager):
        back = pickle.loads(pickle.dumps(spec))
        assert back == spec and back.payload_json == spec.payload_json
    assert TaskSpec("t", "cpu_short").payload == {}  # neither given: an empty payload


def test_a_spec_is_frozen() -> None:
    spec = TaskSpec("t", "cpu_short", {"type": "noop"})
    with pytest.raises(AttributeError):
        spec.priority = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del spec.task_id  # type: ignore[misc]
    assert spec.priority == 0 and spec.task_id == "t"


class _Level(int):  # an int subclass, as an IntEnum is: JSON makes it a plain int
    pass


class _Name(str):
    pass


_FLAT_VALUE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.integers().map(_Level)
    | st.text().map(_Name)
)


@given(
    st.dictionaries(
        (st.text() | st.text().map(_Name)).filter(lambda k: k != "type"), _FLAT_VALUE, max_size=6
    )
)
def test_a_flat_payload_is_normalised_as_its_json_round_trip(payload: dict[str, Any]) -> None:
    """A payload of scalars skips the JSON round trip when a copy gives the same: the stored
    payload must be exactly what decoding its JSON gives, plain types included."""
    got = validate({"payload": payload}, trusted=True).payload
    want = json.loads(json.dumps(payload))
    assert got == want
    assert [(type(k), type(v)) for k, v in got.items()] == [
        (type(k), type(v)) for k, v in want.items()
    ]
    assert got is not payload

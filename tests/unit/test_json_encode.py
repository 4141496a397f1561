"""``json_encode.compact_encoder`` gives the text and the errors of the ``json.JSONEncoder`` it
stands for, for any value: JSON, NaN and infinities, non-string keys, unknown types, cycles;
``json_encode.loads_stored`` decodes any text as ``json.loads`` does, errors included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayinfra.json_encode import compact_encoder, loads_stored

_KEYS = st.text() | st.integers() | st.booleans() | st.none() | st.floats()
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.just(object()),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=12,
)
_OPTIONS = st.fixed_dictionaries(
    {"ensure_ascii": st.booleans(), "allow_nan": st.booleans(), "sort_keys": st.booleans()}
)


def _outcome(encode: Any, value: Any) -> tuple[str, str]:
    try:
        return "ok", encode(value)
    except (TypeError, ValueError) as e:
        return type(e).__name__, str(e)


@given(value=_VALUES, options=_OPTIONS)
def test_same_text_and_errors_as_the_standard_encoder(value: Any, options: dict[str, bool]) -> None:
    standard = json.JSONEncoder(separators=(",", ":"), **options).encode
    fast = compact_encoder(**options)
    assert _outcome(fast, value) == _outcome(standard, value)
    assert _outcome(fast, value) == _outcome(standard, value)  # nothing left over by a failure


def test_a_cycle_is_refused_as_by_the_standard_encoder() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular reference"):
        compact_encoder()(cyclic)


def test_nan_only_where_allowed() -> None:
    assert compact_encoder()([math.nan]) == "[NaN]"
    with pytest.raises(ValueError, match="not JSON compliant"):
        compact_encoder(allow_nan=False)({"x": math.inf})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _decoded(loads: Any, text: Any) -> tuple[str, str]:
    try:
        return "ok", repr(loads(text))  # repr: NaN equals itself
    except (TypeError, ValueError) as e:
        return type(e).__name__, str(e)


@given(value=_JSON, around=st.sampled_from(["", " ", "\n", "x", "}", " 1"]), ascii=st.booleans())
def test_loads_stored_decodes_as_json_loads(value: Any, around: str, ascii: bool) -> None:
    """The runtime's own compact text, and that text with anything before or after it."""
    text = compact_encoder(ensure_ascii=ascii)(value)
    for t in (text, text + around, around + text, text[:-1], text.encode()):
        assert _decoded(loads_stored, t) == _decoded(json.loads, t)


@pytest.mark.parametrize(
    "text", ["", "nul", '{"a":', "[1,]", "NaN", "-Infinity", "\ufeff{}", "1 2"]
)
def test_loads_stored_answers_bad_or_odd_text_as_json_loads(text: str) -> None:
    assert _decoded(loads_stored, text) == _decoded(json.loads, text)

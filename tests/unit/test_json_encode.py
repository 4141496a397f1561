"""``json_encode.compact_encoder`` gives the text and the errors of the ``json.JSONEncoder`` it
stands for, for any value: JSON, NaN and infinities, non-string keys, unknown types, cycles."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayinfra.json_encode import compact_encoder

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

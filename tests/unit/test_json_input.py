"""rayinfra.json_input: JSON from outside is refused by its nesting before the parser recurses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayinfra import json_input
from rayinfra.json_input import MAX_DEPTH, NestingError, deeper_than

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet='[]{}"\\ab,:\n')
    | (st.floats(allow_nan=False, allow_infinity=False))
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\k'), inner, max_size=4)
    ),
    max_leaves=30,
)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_values, st.integers(min_value=0, max_value=40))
def test_the_depth_of_valid_json_is_exact(value: Any, pad: int) -> None:
    # strings full of brackets, quotes and escapes do not count; only the structure does. The
    # padding (a wide array around it) makes the chunked scan start mid-chunk.
    d = _depth(value)
    padded = [[]] * pad + [value]
    for text, depth in (
        (json.dumps(value), d),
        (json.dumps(value, indent=1), d),
        (json.dumps(padded), _depth(padded)),
    ):
        for limit in range(max(0, depth - 2), depth + 2):
            assert deeper_than(text, limit) == (depth > limit), (text, limit)


def test_wide_json_is_not_deep() -> None:
    wide = json.dumps([[i, {"a": [1, "]]]", "[[["]}] for i in range(100_000)])  # 4 levels
    assert not deeper_than(wide, 4) and deeper_than(wide, 3)
    assert not deeper_than(wide, MAX_DEPTH)
    # deep at the very end of a long, wide text
    tail = wide[:-1] + "," + "[" * 600 + "]" * 600 + "]"
    assert deeper_than(tail, MAX_DEPTH) and not deeper_than(tail, 601)


def test_the_bound_is_inclusive_and_the_error_says_it() -> None:
    assert json_input.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(NestingError, match=f"nested deeper than {MAX_DEPTH} levels"):
        json_input.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(NestingError):
        json_input.loads('{"a":' * 100_000)  # never closed: still refused for its depth
    with pytest.raises(NestingError, match="deeper than 3"):
        json_input.loads("[[[[1]]]]", max_depth=3)
    # many brackets side by side are wide, not deep
    assert len(json_input.loads("[" + ",".join(["[]"] * 10_000) + "]")) == 10_000


def test_brackets_inside_strings_and_after_an_unclosed_one_do_not_count() -> None:
    assert json_input.loads(json.dumps(["[" * 10_000, '\\"{' * 5_000])) == [
        "[" * 10_000,
        '\\"{' * 5_000,
    ]
    # the parser stops at an unclosed string: nothing after it is parsed, nothing counts
    assert not deeper_than('["abc' + "[" * 10_000, 1)
    assert not deeper_than('["abc\\' + "[" * 10_000, 1)
    with pytest.raises(ValueError):
        json_input.loads('["abc' + "[" * 10_000)
    # a value that ends early and extra closing brackets: the parser stops; never too shallow
    assert deeper_than("[]]" + "[" * 100, 50)


def test_adversarial_text_is_scanned_in_linear_time() -> None:
    # quotes that never close, escaped quotes: each a quadratic trap for a naive string pattern
    # (10^11 steps here); the test's timeout is the bound
    for text in ('"' + '\\"' * 400_000, '"' * 800_000 + "[" * 1000, '[\\"' * 300_000):
        deeper_than(text, MAX_DEPTH)


def test_bytes_are_decoded_as_json_loads_would() -> None:
    for encoding in ("utf-8", "utf-16", "utf-16-le", "utf-32"):
        assert json_input.loads('{"a": ["é"]}'.encode(encoding)) == {"a": ["é"]}
    with pytest.raises(NestingError):
        json_input.loads(("[" * 1000).encode("utf-16"))
    with pytest.raises(ValueError):
        json_input.loads(b'{"a": "\xff"}')


def test_finite_refuses_nan_infinity_and_overflow() -> None:
    for text in ("[NaN]", "[Infinity]", "[-Infinity]", "[1e999]"):
        assert json_input.loads(text) is not None
        with pytest.raises(ValueError):
            json_input.loads(text, finite=True)
    assert json_input.loads("[1.5, 2]", finite=True) == [1.5, 2]


def test_deep_input_never_reaches_the_recursion_limit() -> None:
    # What broke the CI fuzz run (hypothesis's gc callback, a "Fatal Python error: Cannot
    # recover from stack overflow"): json.loads on deep input runs every garbage collection at
    # the recursion limit, and a callback that calls Python code there fails (or aborts the
    # process). json_input refuses the input first: the callback never fails. Run in a child so
    # that a regression fails this test instead of aborting the test run.
    child = textwrap.dedent(
        """
        import gc, sys
        from rayinfra import json_input

        failures = 0

        def deep(n):
            return 0 if n == 0 else deep(n - 1)

        def callback(phase, info):
            global failures
            try:
                deep(40)
            except RecursionError:
                failures += 1

        gc.callbacks.append(callback)
        gc.set_threshold(1)
        for text in ("[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000):
            for _ in range(20):
                try:
                    json_input.loads(text)
                except ValueError:
                    pass
        print(failures)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0", out.stderr[-2000:]

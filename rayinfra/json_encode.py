"""Compact JSON encoders built once, for the per-task hot paths.

``json.JSONEncoder.encode`` sets up a new C encoder on every call (its float formatter, the
circular-reference map, the C object itself): about 1 us of a small payload's 2 us. The
encoders here make only the C object and a fresh circular-reference map per call and give the
same text and the same errors as ``json.JSONEncoder(separators=(",", ":"), ...).encode``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any

__all__ = ["compact_encoder"]


def compact_encoder(
    *, ensure_ascii: bool = True, allow_nan: bool = True, sort_keys: bool = False
) -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":"), ensure_ascii=..., allow_nan=...,
    sort_keys=...).encode``, with the encoder's set-up done once."""
    slow = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan, sort_keys=sort_keys
    )
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return slow.encode
    string = _encoder.encode_basestring_ascii if ensure_ascii else _encoder.encode_basestring
    default = slow.default

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return string(value)
        # a fresh map of the containers being encoded: a failed encoding may leave entries
        return "".join(
            make({}, default, string, None, ":", ",", sort_keys, False, allow_nan)(value, 0)
        )

    return encode

"""Parse and import ``"package.module:attr.path"`` targets (python handler, config handlers)."""

from __future__ import annotations

import importlib
import re
from typing import Any

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET_RE = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*$")


def parse_target(spec: object) -> tuple[str, list[str]]:
    """Split ``"pkg.mod:fn"`` into ``("pkg.mod", ["fn"])``; ValueError for any other shape."""
    if not isinstance(spec, str) or not _TARGET_RE.match(spec):
        raise ValueError(f"must be 'package.module:function', got {spec!r}")
    module, _, attrs = spec.partition(":")
    return module, attrs.split(".")


def load_target(spec: str) -> Any:
    """Import the module of ``spec`` and follow its attribute path.

    Raises ValueError for a malformed spec, LookupError naming the target when the module cannot
    be imported (any exception while importing it counts) or an attribute is missing.
    """
    module_name, attrs = parse_target(spec)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise LookupError(f"cannot import {spec!r}: {type(exc).__name__}: {exc}") from exc
    for i, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            owner = module_name if i == 0 else f"{module_name}:{'.'.join(attrs[:i])}"
            raise LookupError(
                f"cannot import {spec!r}: {owner!r} has no attribute {attr!r}"
            ) from exc
    return obj

"""Map task types to handlers: builtins, config handlers and the ``rayinfra.handlers`` entry points.

Lookup order: builtins (never replaceable), then config handlers (``[handlers] name = "mod:fn"``),
then entry points (entry-point name = task type). Config handlers and entry points are imported
lazily, on the first lookup of their name; an import failure is remembered and reported as
:class:`HandlerLoadError` on every later lookup of that name.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from rayinfra.handlers._targets import load_target, parse_target
from rayinfra.handlers.builtin import echo_handler, noop_handler, python_handler, sleep_handler
from rayinfra.handlers.context import (
    HandlerError,
    HandlerLoadError,
    TaskContext,
    UnknownHandlerError,
)
from rayinfra.handlers.shell import shell_handler

__all__ = [
    "ENTRY_POINT_GROUP",
    "Handler",
    "HandlerInfo",
    "HandlerRegistry",
    "builtin_handlers",
    "known_task_types",
]

Handler = Callable[[dict[str, Any], TaskContext], Any]
"""A task handler: ``fn(payload, ctx) -> JSON``."""

ENTRY_POINT_GROUP = "rayinfra.handlers"
"""Entry-point group scanned for user handlers; the entry-point name is the task type."""


@dataclass(frozen=True)
class HandlerInfo:
    """A resolved handler.

    ``source`` is ``"builtin"``, ``"config"`` or ``"entry_point:<distribution>"``.
    ``trusted_only``: the handler runs arbitrary code (``shell``, ``python``); gateway callers need
    the token to use it. ``blocking=False`` marks trivial handlers (``noop``, ``echo``) an executor
    may call inline on its event loop; everything else runs in a thread.
    """

    name: str
    fn: Handler
    source: str
    trusted_only: bool = False
    blocking: bool = True


def builtin_handlers() -> dict[str, HandlerInfo]:
    """The builtin handlers by task type (a fresh dict)."""
    return {
        "noop": HandlerInfo("noop", noop_handler, "builtin", trusted_only=False, blocking=False),
        "echo": HandlerInfo("echo", echo_handler, "builtin", trusted_only=False, blocking=False),
        "sleep": HandlerInfo("sleep", sleep_handler, "builtin", trusted_only=False, blocking=True),
        "shell": HandlerInfo("shell", shell_handler, "builtin", trusted_only=True, blocking=True),
        "python": HandlerInfo(
            "python", python_handler, "builtin", trusted_only=True, blocking=True
        ),
    }


class HandlerRegistry:
    """Resolve ``payload["type"]`` to a handler and run it.

    ``config_handlers`` maps task types to ``"pkg.mod:fn"`` targets; a malformed target or a name
    that would replace a builtin is a ValueError naming the handler. With ``load_entry_points`` the
    ``rayinfra.handlers`` entry points are discovered now (and imported on first use). Entry points
    that would replace a builtin, are shadowed by a config handler or duplicate another entry
    point's name are skipped with a note in :attr:`problems`, as are later load failures.
    Thread-safe.
    """

    def __init__(
        self,
        config_handlers: Mapping[str, str] | None = None,
        *,
        load_entry_points: bool = True,
    ) -> None:
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._builtins = builtin_handlers()
        self._loaded: dict[str, HandlerInfo] = dict(self._builtins)
        self._failed: dict[str, str] = {}
        self._config: dict[str, str] = {}
        self._entry_points: dict[str, importlib.metadata.EntryPoint] = {}
        for name, target in (config_handlers or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"handler {name!r}: the task type must be a non-empty string")
            if name in self._builtins:
                raise ValueError(f"handler {name!r}: cannot replace the builtin handler {name!r}")
            try:
                parse_target(target)
            except ValueError as exc:
                raise ValueError(f"handler {name!r}: {exc}") from exc
            self._config[name] = target
        if load_entry_points:
            self._discover_entry_points()

    def names(self) -> list[str]:
        """Every known task type, sorted (entry points included before they are imported)."""
        return sorted({*self._builtins, *self._config, *self._entry_points})

    def get(self, type_name: str) -> HandlerInfo:
        """The handler for ``type_name``, importing it on first use.

        Raises UnknownHandlerError (listing the known types) or its subclass HandlerLoadError.
        """
        with self._lock:
            info = self._loaded.get(type_name)
            if info is not None:
                return info
            failure = self._failed.get(type_name)
            if failure is not None:
                raise HandlerLoadError(failure)
            if type_name in self._config:
                info = self._load_config(type_name, self._config[type_name])
            elif type_name in self._entry_points:
                info = self._load_entry_point(type_name, self._entry_points[type_name])
            else:
                raise UnknownHandlerError(
                    f"unknown task type {type_name!r}; known types: {', '.join(self.names())}"
                )
            self._loaded[type_name] = info
            return info

    def run(self, payload: dict[str, Any], ctx: TaskContext) -> Any:
        """Run the handler ``payload["type"]`` names and return its JSON result.

        Raises HandlerError for a payload without a usable ``type``, UnknownHandlerError for a type no
        handler has, TypeError when a non-builtin handler returns a non-JSON value, and whatever
        the handler raises (TaskFailedError, TaskCancelledError, TimeoutError, HandlerError, ...).
        """
        if not isinstance(payload, dict):
            raise HandlerError(f"payload: must be a JSON object, got {type(payload).__name__}")
        if "type" not in payload:
            raise HandlerError("payload.type: missing")
        type_name = payload["type"]
        if not isinstance(type_name, str) or not type_name:
            raise HandlerError(f"payload.type: must be a non-empty string, got {type_name!r}")
        info = self.get(type_name)
        result = info.fn(payload, ctx)
        if info.source != "builtin":
            try:
                json.dumps(result)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"handler {type_name!r} ({info.source}) returned a non-JSON value of type "
                    f"{type(result).__name__}"
                ) from exc
        return result

    def _discover_entry_points(self) -> None:
        try:
            found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # noqa: BLE001 - broken metadata must not take builtins down
            self.problems.append(f"entry points {ENTRY_POINT_GROUP!r}: cannot list them: {exc}")
            return
        for ep in found:
            where = f"entry point {ep.name!r} ({ep.value}, from {_dist_name(ep)})"
            if ep.name in self._builtins:
                self.problems.append(f"{where}: ignored, cannot replace the builtin handler")
            elif ep.name in self._config:
                self.problems.append(f"{where}: ignored, the config handler of that name wins")
            elif ep.name in self._entry_points:
                self.problems.append(f"{where}: ignored, the name is already taken by another")
            else:
                self._entry_points[ep.name] = ep

    def _load_config(self, name: str, target: str) -> HandlerInfo:
        try:
            fn = load_target(target)
        except (ValueError, LookupError) as exc:
            self._fail(name, f"handler {name!r} (config {target!r}): {exc}")
        return self._checked(name, fn, "config", f"config {target!r}")

    def _load_entry_point(self, name: str, ep: importlib.metadata.EntryPoint) -> HandlerInfo:
        source = f"entry_point:{_dist_name(ep)}"
        try:
            fn = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported
            self._fail(
                name, f"handler {name!r} ({source}, {ep.value!r}): {type(exc).__name__}: {exc}"
            )
        return self._checked(name, fn, source, f"{source}, {ep.value!r}")

    def _checked(self, name: str, fn: Any, source: str, where: str) -> HandlerInfo:
        if not callable(fn):
            self._fail(name, f"handler {name!r} ({where}): not callable")
        return HandlerInfo(name, fn, source, trusted_only=False, blocking=True)

    def _fail(self, name: str, message: str) -> NoReturn:
        self._failed[name] = message
        self.problems.append(message)
        raise HandlerLoadError(message)


@functools.lru_cache(maxsize=8)
def _known_task_types(config_handlers: tuple[tuple[str, str], ...]) -> frozenset[str]:
    registry = HandlerRegistry(dict(config_handlers))
    return frozenset(registry.names())


def known_task_types(config_handlers: Mapping[str, str]) -> frozenset[str]:
    """Every task type a registry built from ``config_handlers`` knows (built-ins, config
    handlers, the ``rayinfra.handlers`` entry points installed here), without importing any;
    computed once per process and config (admission asks on every submit)."""
    return _known_task_types(tuple(sorted(config_handlers.items())))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None)
    return name if isinstance(name, str) else "unknown"

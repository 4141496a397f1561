"""Task specs: validation of submitted tasks, idempotency identity, and the gRPC wire mapping.

Everything here is pure: no Ray, no I/O, no clock. The scheduler actor calls
:func:`validate_spec` on every submit (Python client, gRPC and HTTP all end up here, the edges only
rename their fields to the Python client's names), stores :meth:`TaskSpec.to_dict`, and compares
:meth:`TaskSpec.identity` values to decide whether a repeated submit with the same id is a harmless
retry or a conflicting reuse of the id.

gRPC carries payloads and results as ``map<string,string>``; :func:`decode_wire_payload` and
:func:`encode_wire_result` translate between those maps and native JSON values the way the
original system did.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from rayinfra import json_input
from rayinfra.errors import InvalidArgumentError, NotTrustedError
from rayinfra.json_encode import compact_encoder, loads_stored

__all__ = [
    "MAX_PAYLOAD_DEPTH",
    "MAX_TASK_ID_LEN",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "SPEC_FIELDS",
    "TASK_STATES",
    "TERMINAL_STATES",
    "TRUSTED_TYPES",
    "InvalidArgumentError",
    "TaskSpec",
    "decode_timeout_seconds",
    "decode_wire_payload",
    "encode_wire_result",
    "is_valid_task_id",
    "validate_spec",
]

#: Every state a task can be in, in lifecycle order.
TASK_STATES = ("pending", "running", "completed", "failed", "cancelled")
#: States a task never leaves.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
#: Payload types that run arbitrary code: only trusted (authenticated / in-cluster) callers may
#: submit them.
TRUSTED_TYPES = frozenset({"shell", "python"})

#: The keys :func:`validate_spec` accepts (the Python client's keyword names).
SPEC_FIELDS = (
    "task_id",
    "task_class",
    "payload",
    "priority",
    "workflow_id",
    "timeout_s",
    "runtime_env",
)
_SPEC_FIELD_SET = frozenset(SPEC_FIELDS)
#: Ray runtime_env keys a task may set (it runs code, so only trusted callers may set any)
RUNTIME_ENV_KEYS = frozenset(
    {
        "py_modules",
        "working_dir",
        "env_vars",
        "pip",
        "uv",
        "conda",
        "excludes",
        "config",
        "py_executable",
    }
)
#: Longest accepted task id (ids become file names elsewhere).
MAX_TASK_ID_LEN = 256
#: Inclusive priority bounds.
PRIORITY_MIN = -1_000_000
PRIORITY_MAX = 1_000_000
#: Deepest nesting of objects/arrays accepted in a payload. JSON this deep is pathological, and
#: staying far below Python's recursion limit keeps every later ``json``/``pickle`` pass safe.
MAX_PAYLOAD_DEPTH = 128

_TASK_ID_RE = re.compile(rf"[A-Za-z0-9._:@-]{{1,{MAX_TASK_ID_LEN}}}")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_]+")
# Names other front ends use for the same fields; only used to make the error message helpful.
_FIELD_HINTS = {
    "id": "task_id",
    "class": "task_class",
    "workload_class": "task_class",
    "timeout_seconds": "timeout_s",
    "timeout": "timeout_s",
}


# built once: json.dumps with any option builds a new encoder per call (~2.5 us)
_ENCODE = compact_encoder(ensure_ascii=False, allow_nan=False)
_ENCODE_SORTED = compact_encoder(ensure_ascii=False, allow_nan=False, sort_keys=True)


def _dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON, UTF-8 text (not ``\\u`` escapes), NaN/Infinity refused (ValueError)."""
    return _ENCODE_SORTED(value) if sort_keys else _ENCODE(value)


class TaskSpec:
    """A validated task as the scheduler stores and runs it.

    Build one with :func:`validate_spec` (untrusted input), :meth:`from_dict` (a stored record)
    or from a stored row (``payload_json`` only: the scheduler reads every task back after its
    commit, and most never need their payload decoded there; :attr:`payload` decodes it on
    first use). ``payload`` is a plain JSON object; treat it as read-only (the spec is frozen,
    the dict cannot be). Hashing uses ``task_id`` only; equality compares every field but
    ``payload_json``: the payload's compact JSON when validation or the store made it (the
    store writes it as it is, the executor is sent it as it is), else ``None``.
    """

    __slots__ = (
        "_payload",
        "payload_json",
        "priority",
        "runtime_env",
        "task_class",
        "task_id",
        "timeout_s",
        "workflow_id",
    )
    task_id: str
    task_class: str
    priority: int
    workflow_id: str
    timeout_s: float | None
    runtime_env: dict[str, Any] | None  # per-task Ray runtime_env (over the class's)
    payload_json: str | None
    _payload: dict[str, Any] | None

    def __init__(
        self,
        task_id: str,
        task_class: str,
        payload: dict[str, Any] | None = None,
        priority: int = 0,
        workflow_id: str = "",
        timeout_s: float | None = None,
        runtime_env: dict[str, Any] | None = None,
        payload_json: str | None = None,
    ) -> None:
        if payload is None and payload_json is None:
            payload = {}
        put = object.__setattr__
        put(self, "task_id", task_id)
        put(self, "task_class", task_class)
        put(self, "_payload", payload)
        put(self, "priority", priority)
        put(self, "workflow_id", workflow_id)
        put(self, "timeout_s", timeout_s)
        put(self, "runtime_env", runtime_env)
        put(self, "payload_json", payload_json)

    @property
    def payload(self) -> dict[str, Any]:
        """The payload, decoded from ``payload_json`` on first use when built from that."""
        payload = self._payload
        if payload is None:
            payload = loads_stored(self.payload_json)  # type: ignore[arg-type]
            object.__setattr__(self, "_payload", payload)
        return payload

    def _fields(self) -> tuple[Any, ...]:
        return (self.task_id, self.task_class, self.payload, self.priority, self.workflow_id,
                self.timeout_s, self.runtime_env)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self.task_id)

    def __repr__(self) -> str:
        return (
            f"TaskSpec(task_id={self.task_id!r}, task_class={self.task_class!r}, "
            f"payload={self.payload!r}, priority={self.priority!r}, "
            f"workflow_id={self.workflow_id!r}, timeout_s={self.timeout_s!r}, "
            f"runtime_env={self.runtime_env!r})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TaskSpec is frozen: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"TaskSpec is frozen: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.task_id, self.task_class, self._payload, self.priority, self.workflow_id,
                  self.timeout_s, self.runtime_env, self.payload_json)  # fmt: skip
        return (TaskSpec, fields)

    def identity(self) -> str:
        """SHA-256 hex digest of the canonical JSON of everything but the id.

        Covers class, payload, priority, workflow id and timeout (sorted keys, compact separators,
        UTF-8). Two submits with the same id are the same task iff their identities are equal;
        payload key order does not matter, any other difference does.
        """
        return hashlib.sha256(self._canonical().encode("utf-8")).hexdigest()

    def _canonical(self) -> str:
        """The identity's text: the sorted-keys compact JSON of class, payload, priority,
        runtime_env (when set), timeout and workflow id. Assembled from its parts when they
        have the types validation gives (an int priority, a finite float or no timeout): the
        same text as encoding the document, at about half the cost on the submit path."""
        prio, timeout = self.priority, self.timeout_s
        if type(prio) is int and (
            timeout is None or (type(timeout) is float and math.isfinite(timeout))
        ):
            env = self.runtime_env
            return "".join(
                (
                    '{"class":', _ENCODE(self.task_class),
                    ',"payload":', _ENCODE_SORTED(self.payload),
                    ',"priority":', int.__repr__(prio),
                    "" if env is None else ',"runtime_env":' + _ENCODE_SORTED(env),
                    ',"timeout_s":', "null" if timeout is None else float.__repr__(timeout),
                    ',"workflow_id":', _ENCODE(self.workflow_id), "}",
                )
            )  # fmt: skip
        doc = {
            "class": self.task_class,
            "payload": self.payload,
            "priority": self.priority,
            "workflow_id": self.workflow_id,
            "timeout_s": self.timeout_s,
        }
        if self.runtime_env is not None:  # absent from older identities, which stay valid
            doc["runtime_env"] = self.runtime_env
        return _dumps(doc, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict keyed by :data:`SPEC_FIELDS`; the payload is a deep copy."""
        return {
            "task_id": self.task_id,
            "task_class": self.task_class,
            "payload": json.loads(_dumps(self.payload)),
            "priority": self.priority,
            "workflow_id": self.workflow_id,
            "timeout_s": self.timeout_s,
            "runtime_env": None
            if self.runtime_env is None
            else json.loads(_dumps(self.runtime_env)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskSpec:
        """Rebuild a spec from :meth:`to_dict` output (e.g. a state-store record).

        Checks the shape (types, required keys) and raises ``ValueError`` on a malformed record,
        but deliberately does not re-apply submit-time policy (known class, payload limit, trust):
        a task accepted under an older configuration must stay readable. Unknown keys are ignored
        so records written by a newer version still load.
        """
        try:
            task_id = d["task_id"]
            task_class = d["task_class"]
        except KeyError as exc:
            raise ValueError(f"malformed task record: missing {exc.args[0]!r}") from None
        payload = d.get("payload", {})
        priority = d.get("priority", 0)
        workflow_id = d.get("workflow_id", "")
        timeout_s = d.get("timeout_s")
        runtime_env = d.get("runtime_env")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise ValueError(f"malformed task record {d.get('task_id')!r}: bad runtime_env")
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(
                f"malformed task record: task_id {task_id!r} is not a non-empty string"
            )
        if not isinstance(task_class, str) or not task_class:
            raise ValueError(f"malformed task record {task_id!r}: bad task_class {task_class!r}")
        if not isinstance(payload, dict):
            raise ValueError(f"malformed task record {task_id!r}: payload is not an object")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"malformed task record {task_id!r}: bad priority {priority!r}")
        if not isinstance(workflow_id, str):
            raise ValueError(f"malformed task record {task_id!r}: bad workflow_id {workflow_id!r}")
        if timeout_s is not None and (
            not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool)
        ):
            raise ValueError(f"malformed task record {task_id!r}: bad timeout_s {timeout_s!r}")
        return cls(
            task_id=task_id,
            task_class=task_class,
            payload=dict(payload),
            priority=priority,
            workflow_id=workflow_id,
            timeout_s=None if timeout_s is None else float(timeout_s),
            runtime_env=None if runtime_env is None else dict(runtime_env),
        )


def is_valid_task_id(task_id: object) -> bool:
    """True if ``task_id`` is safe to use as an id and as a file name.

    1..256 characters of ``[A-Za-z0-9._:@-]``, not starting with ``.`` or ``-`` (hidden files,
    ``.``/``..``, things that look like command-line options) and never containing ``..``.
    """
    return (
        isinstance(task_id, str)
        and _TASK_ID_RE.fullmatch(task_id) is not None
        and task_id[0] not in ".-"
        and ".." not in task_id
    )


def _short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about untrusted input."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _check_json_object(payload: dict[str, Any]) -> None:
    """Walk ``payload`` (iteratively) and raise InvalidArgumentError("payload", ...) at the first value
    that is not plain JSON: non-string keys, NaN/Infinity, other types, or nesting too deep."""
    # a path is a tuple of steps (a key, or an index in a list), made into text only for an
    # error: most payloads are a few scalars, and formatting every path would cost more than
    # the whole check
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(payload, ())]
    while stack:
        value, path = stack.pop()
        if type(value) is str or value is None or type(value) is int or type(value) is bool:
            continue  # the common case first, without the isinstance chain below
        if isinstance(value, (dict, list, tuple)) and len(path) >= MAX_PAYLOAD_DEPTH:
            raise InvalidArgumentError(
                "payload", f"nested deeper than {MAX_PAYLOAD_DEPTH} levels {_where(path)}"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidArgumentError(
                        "payload",
                        f"key {_short(key)} {_where(path)} is not a string; JSON object keys are",
                    )
                stack.append((item, (*path, key)))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                stack.append((item, (*path, i)))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidArgumentError(
                    "payload", f"value {_where(path)} is {value!r}; JSON has no NaN or Infinity"
                )
        elif isinstance(value, (str, int)):  # subclasses (an IntEnum, a str subclass)
            continue
        else:
            raise InvalidArgumentError(
                "payload",
                f"value {_where(path)} has type {type(value).__name__!r}, which is not JSON",
            )


_SCALARS = frozenset({str, int, bool, type(None)})


def _is_flat(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` holds only plain scalars under plain string keys (most payloads): no
    walk is needed, and a copy of it is what decoding its JSON would give. A subclass (an
    IntEnum, a str subclass) is not plain: the JSON round trip makes it the base type."""
    for key, value in payload.items():
        kind = type(value)
        if type(key) is not str or (
            kind not in _SCALARS and not (kind is float and value - value == 0.0)
        ):
            return False
    return True


def _where(steps: tuple[str | int, ...]) -> str:
    """``at payload.a[0].b``-style text for a walk's position (``at the top level``)."""
    path = ""
    for step in steps:
        path = f"{path}[{step}]" if isinstance(step, int) else _join(path, step)
    if not path:
        return "at the top level"
    return f"at {path if len(path) <= 120 else path[:117] + '...'}"


def _check_utf8(field_name: str, text: str) -> None:
    _utf8_size(field_name, text)


def _utf8_size(field_name: str, text: str) -> int:
    """The UTF-8 length of ``text``; InvalidArgumentError naming the field for a lone surrogate."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            field_name, "contains a lone surrogate, which is not valid Unicode text"
        ) from None


def _resolve_class(
    raw_class: object, classes: Collection[str], aliases: Mapping[str, str], default_class: str
) -> str:
    if raw_class is None or raw_class == "":
        raw_class = default_class
    if not isinstance(raw_class, str):
        raise InvalidArgumentError(
            "task_class", f"must be a string, got {type(raw_class).__name__}"
        )
    name = aliases.get(raw_class, raw_class)
    if name not in classes:
        valid = ", ".join(sorted({*classes, *aliases}))
        alias_note = f" (alias of {name!r})" if name != raw_class else ""
        raise InvalidArgumentError(
            "task_class", f"unknown class {_short(raw_class)}{alias_note}; valid: {valid}"
        )
    return name


def validate_spec(
    raw: Mapping[str, Any],
    *,
    classes: Collection[str],
    aliases: Mapping[str, str],
    default_class: str,
    payload_limit_bytes: int,
    new_id: Callable[[], str],
    trusted: bool,
) -> TaskSpec:
    """Turn a submit request (Python client field names) into a :class:`TaskSpec`.

    ``raw`` may hold ``task_id``, ``task_class``, ``payload``, ``priority``, ``workflow_id`` and
    ``timeout_s``; anything else is rejected. A value of ``None`` means "not given" (JSON
    ``null``). A missing or empty ``task_id`` is replaced by ``new_id()`` (which must return a
    valid id); a missing or empty class is ``default_class``; aliases are resolved. The payload is
    checked to be a plain JSON object no larger than ``payload_limit_bytes`` (UTF-8 of its compact
    JSON) and is normalised to a fresh dict (tuples become lists), detached from the caller's.

    ``trusted`` says whether the caller may run code: without it, a payload ``type`` in
    :data:`TRUSTED_TYPES` is refused. An unknown payload ``type`` is accepted here and fails the
    task when it runs.

    Raises :class:`InvalidArgumentError` naming the offending field.
    """
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(
            "task", f"must be an object of task fields, got {type(raw).__name__}"
        )
    unknown = (
        [] if raw.keys() <= _SPEC_FIELD_SET else sorted(str(k) for k in raw if k not in SPEC_FIELDS)
    )
    if unknown:
        first = unknown[0]
        hint = f" (did you mean {_FIELD_HINTS[first]!r}?)" if first in _FIELD_HINTS else ""
        listed = ", ".join(_short(k) for k in unknown)
        raise InvalidArgumentError(
            first[:80],
            f"unknown field {listed}{hint}; valid fields: {', '.join(SPEC_FIELDS)}",
        )

    task_id = raw.get("task_id")
    if task_id is None or task_id == "":
        task_id = new_id()
    elif not isinstance(task_id, str):
        raise InvalidArgumentError("task_id", f"must be a string, got {type(task_id).__name__}")
    elif not is_valid_task_id(task_id):
        raise InvalidArgumentError(
            "task_id",
            f"{_short(task_id)} is not a valid id: use "
            f"1..{MAX_TASK_ID_LEN} characters of A-Z a-z 0-9 . _ : @ -, not starting with "
            "'.' or '-' and without '..'",
        )

    task_class = _resolve_class(raw.get("task_class"), classes, aliases, default_class)

    payload_in = raw.get("payload")
    if payload_in is None:
        payload_in = {}
    if not isinstance(payload_in, dict):
        raise InvalidArgumentError(
            "payload", f"must be a JSON object, got {type(payload_in).__name__}"
        )
    flat = _is_flat(payload_in)
    if not flat:
        _check_json_object(payload_in)
    try:
        text = _dumps(payload_in)
    except (TypeError, ValueError, RecursionError) as exc:  # defensive: the walk should catch all
        raise InvalidArgumentError("payload", f"is not JSON-serialisable: {exc}") from None
    size = len(text) if text.isascii() else _utf8_size("payload", text)
    if size > payload_limit_bytes:
        raise InvalidArgumentError(
            "payload",
            f"serialized payload is {size} bytes, which exceeds the limit of "
            f"{payload_limit_bytes} bytes",
        )
    # normalised: what decoding its JSON gives (a flat one of plain scalars: a copy gives that)
    payload: dict[str, Any] = dict(payload_in) if flat else json.loads(text)

    ptype = payload.get("type")
    if "type" in payload and not isinstance(ptype, str):
        raise InvalidArgumentError("payload.type", f"must be a string, got {type(ptype).__name__}")
    # Compared loosely ("Shell", " python") so no handler lookup quirk can turn into a bypass.
    if isinstance(ptype, str) and ptype.strip().lower() in TRUSTED_TYPES and not trusted:
        raise NotTrustedError(
            "payload.type", f"{_short(ptype)} tasks run code and need an authenticated caller"
        )

    priority = raw.get("priority")
    if priority is None:
        priority = 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidArgumentError(
            "priority", f"must be an integer, got {type(priority).__name__} {_short(priority)}"
        )
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidArgumentError(
            "priority", f"{_short(priority)} is out of range [{PRIORITY_MIN}, {PRIORITY_MAX}]"
        )

    workflow_id = raw.get("workflow_id")
    if workflow_id is None:
        workflow_id = ""
    if not isinstance(workflow_id, str):
        raise InvalidArgumentError(
            "workflow_id", f"must be a string, got {type(workflow_id).__name__}"
        )
    _check_utf8("workflow_id", workflow_id)

    timeout_s = raw.get("timeout_s")
    if timeout_s is not None:
        if not _is_real(timeout_s) or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise InvalidArgumentError(
                "timeout_s",
                f"must be > 0 and finite seconds (or None for the class default), "
                f"got {_short(timeout_s)}",
            )
        timeout_s = float(timeout_s)

    runtime_env = _validate_runtime_env(raw.get("runtime_env"), trusted)

    return TaskSpec(
        task_id=task_id,
        task_class=task_class,
        payload=payload,
        payload_json=text,
        priority=priority,
        workflow_id=workflow_id,
        timeout_s=timeout_s,
        runtime_env=runtime_env,
    )


def _validate_runtime_env(value: Any, trusted: bool) -> dict[str, Any] | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise InvalidArgumentError("runtime_env", f"must be an object, got {type(value).__name__}")
    if not trusted:
        raise NotTrustedError(
            "runtime_env", "a runtime_env runs code and needs an authenticated caller"
        )
    unknown = sorted(str(k) for k in value if k not in RUNTIME_ENV_KEYS)
    if unknown:
        raise InvalidArgumentError(
            "runtime_env",
            f"unknown key {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(RUNTIME_ENV_KEYS))}",
        )
    env_vars = value.get("env_vars", {})
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise InvalidArgumentError("runtime_env.env_vars", "must map strings to strings")
    try:
        return dict(json.loads(_dumps(value)))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError("runtime_env", f"not JSON: {e}") from None


# --------------------------------------------------------------------------------------------
# gRPC wire mapping (map<string,string>)


def decode_wire_payload(m: Mapping[str, str]) -> dict[str, Any]:
    """Decode a gRPC ``map<string,string>`` payload into a JSON object, as JSON (what
    ``gateway.original_payload_decoding = false`` gives; on, the gateway decodes the original
    way: :func:`rayinfra.compat.decode_original_value`).

    Each value is parsed as JSON where it parses (``"1"`` -> 1, ``"true"`` -> True, ``"null"``
    -> None, ``'{"a":1}'`` -> dict, ``'"x"'`` -> ``"x"``) and kept as the string otherwise
    (``"abc"``, ``""``, ``"1 2"``, and ``"NaN"``/``"Infinity"``/``"1e999"``, which would not be
    JSON). A ``payload_json`` entry holding a JSON object is merged at the top level (its keys win)
    and removed; any other ``payload_json`` raises InvalidArgumentError("payload.payload_json").
    """
    out: dict[str, Any] = {}
    merged: dict[str, Any] | None = None
    for key, text in m.items():
        if not isinstance(text, str):
            raise InvalidArgumentError(
                f"payload.{key[:80]}",
                f"wire payload values must be strings, got {type(text).__name__}",
            )
        if key == "payload_json":
            try:
                obj = json_input.loads(text, finite=True)
            except ValueError as exc:
                raise InvalidArgumentError(
                    "payload.payload_json", f"must be a JSON object; it is not valid JSON ({exc})"
                ) from None
            if not isinstance(obj, dict):
                raise InvalidArgumentError(
                    "payload.payload_json",
                    f"must be a JSON object, got JSON {type(obj).__name__}",
                )
            merged = obj
            continue
        try:
            out[key] = json_input.loads(text, finite=True)
        except ValueError:
            out[key] = text
    if merged is not None:
        out.update(merged)
    return out


def encode_wire_result(result: Any) -> dict[str, str]:
    """Encode a handler's JSON result for a gRPC ``map<string,string>``.

    A dict maps key by key: strings pass through, other values become compact JSON. ``None``
    becomes ``{}``; a bare string ``s`` becomes ``{"result": s}``; any other value ``v`` becomes
    ``{"result": json.dumps(v)}``. Raises ``TypeError``/``ValueError`` if the result is not JSON
    (non-string keys, NaN/Infinity, other types).
    """
    if result is None or result == {}:  # (a no-op's result: the common case, and cheapest)
        return {}
    if isinstance(result, Mapping):
        out: dict[str, str] = {}
        for key, value in result.items():
            if not isinstance(key, str):
                raise TypeError(f"result keys must be strings, got {key!r}")
            out[key] = value if isinstance(value, str) else _dumps(value)
        return out
    if isinstance(result, str):
        return {"result": result}
    return {"result": _dumps(result)}


def decode_timeout_seconds(value: float) -> float | None:
    """Map gRPC ``timeout_seconds`` to ``timeout_s``: 0 means the class default (None).

    Negative, NaN or infinite values raise InvalidArgumentError("timeout_seconds").
    """
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(
            "timeout_seconds",
            f"must be > 0 and finite seconds, or 0 for the class default; got {value!r}",
        )
    if value == 0:
        return None
    return float(value)

"""What the original system's clients rely on beyond the wire contract (pure: no Ray, no I/O).

The original Go orchestrator and its clients (the Python ``OrchestratorClient`` and
``GoOrchestratorClient``, Go and HTTP callers) never sent a payload ``type``, decoded payload
strings their own way and knew four task states. rayinfra keeps them working unchanged:

- :func:`decode_original_value` / :func:`decode_wire_map`: the original server's decoding of the
  ``map<string,string>`` payload (``"True"`` -> true, ``"007"`` -> 7), used for the original
  protobuf map fields while ``gateway.original_payload_decoding`` is on (the default);
- :func:`route_untyped`: a payload without ``type`` gets a handler from its fields and its class
  (``[tasks]``; docs/tasks.md, "Payloads without a type");
- :func:`original_status`: a ``cancelled`` task as the original's clients can see it: ``failed``
  with the reason ``cancelled`` (they stop waiting on ``completed`` or ``failed`` only);
- :data:`API_LEVEL_METADATA`: how a client of the current protos says so (docs/api.md,
  "Original and current clients").
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from rayinfra import json_input
from rayinfra.errors import InvalidArgumentError
from rayinfra.scheduling.tasks import decode_wire_payload

if TYPE_CHECKING:
    from rayinfra.config import TasksSection
    from rayinfra.models import TaskStatus

__all__ = [
    "API_LEVEL_METADATA",
    "CURRENT_API_LEVEL",
    "ROUTE_FIELDS",
    "Route",
    "decode_original_value",
    "decode_wire_map",
    "is_current_client",
    "original_status",
    "original_task_metrics",
    "route_untyped",
]

#: gRPC request metadata a client of the current protos sends (value: its API level). Without
#: it a caller is taken for a client of the original protos (level 1): the original RPCs answer
#: in the original's vocabulary (a cancelled task is ``failed``, reason ``cancelled``).
API_LEVEL_METADATA = "rayinfra-api"
#: the level rayinfra's own clients speak: task states include ``cancelled``
CURRENT_API_LEVEL = 2

#: payload keys that route a payload without ``type``, in the order they are looked at
ROUTE_FIELDS = ("task_type", "argv", "command")
SHELL = "shell"
CANCELLED_REASON = "cancelled"

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT64 = (-(2**63), 2**63 - 1)
# characters that make a command line need a shell (operators, expansions, globs, comments)
_NEEDS_SHELL = re.compile(r"[|&;<>()$`*?\[\]{}~#\n\\]")


# --------------------------------------------------------------------------------------------
# payload strings, as the original server decoded them


def decode_original_value(raw: str) -> Any:
    """One payload string decoded as the original Go server's ``decodePayloadValue`` did.

    On the text stripped of surrounding whitespace: ``true``/``false``/``null`` in any case
    (``"True"``, ``" FALSE "``) become true/false/null; a base-10 integer that fits 64 bits
    (``"007"`` -> 7, ``"+5"`` -> 5) an int; a decimal number with ``.``, ``e`` or ``E`` a float
    (``"1."``, ``".5"``, ``"1e3"``; not one that overflows to infinity); text starting with
    ``{`` and ending with ``}`` (or ``[`` ... ``]``) that is valid JSON an object (array).
    Anything else is kept as it came, surrounding whitespace included: ``"abc"``, ``""``,
    ``"NaN"``, ``"1e999"``, ``'"quoted"'`` (quotes kept), ``"99999999999999999999"``. Unlike Go,
    hexadecimal floats (``"0x1p-2"``) stay strings.
    """
    text = raw.strip()
    if not text:
        return raw
    lower = text.lower()
    if lower in ("true", "false"):
        return lower == "true"
    if lower == "null":
        return None
    if _INT.fullmatch(text):
        value = int(text)
        if _INT64[0] <= value <= _INT64[1]:
            return value
        return raw  # Go: out of range, and no '.', 'e' or 'E' to try it as a float
    if _FLOAT.fullmatch(text) and any(c in text for c in ".eE"):
        number = float(text)
        if math.isfinite(number):
            return number
        return raw
    if (text[0], text[-1]) in (("{", "}"), ("[", "]")):
        try:
            return json_input.loads(text, finite=True)
        except ValueError:
            return raw
    return raw


def decode_wire_map(m: Mapping[str, str], *, original: bool) -> dict[str, Any]:
    """A ``map<string,string>`` payload as a JSON object.

    ``original``: each value by :func:`decode_original_value` (the original server's rules);
    otherwise each value as JSON where it parses (:func:`~rayinfra.scheduling.tasks.
    decode_wire_payload`). Either way a ``payload_json`` entry is strict JSON: an object merged
    at the top level (its keys win), anything else InvalidArgumentError naming
    ``payload.payload_json``. rayinfra's own clients send their whole payload that way.
    """
    if not original:
        return decode_wire_payload(m)
    out: dict[str, Any] = {}
    for key, text in m.items():
        if not isinstance(text, str):
            raise InvalidArgumentError(
                f"payload.{key[:80]}",
                f"wire payload values must be strings, got {type(text).__name__}",
            )
        if key != "payload_json":
            out[key] = decode_original_value(text)
    if "payload_json" in m:
        out.update(decode_wire_payload({"payload_json": m["payload_json"]}))
    return out


# --------------------------------------------------------------------------------------------
# payloads without a type


@dataclasses.dataclass(frozen=True)
class Route:
    """Why a payload without ``type`` runs ``handler``: ``field`` is the payload key that chose
    it (``""``: its class's default), ``reason`` says so in words."""

    handler: str
    field: str
    reason: str

    def blame(self, e: InvalidArgumentError) -> InvalidArgumentError:
        """``e`` about the routed ``payload.type`` (not trusted, not allowed in the class),
        re-addressed to the key that chose the handler; other errors are returned as they are."""
        if e.field != "payload.type":
            return e
        where = f"payload.{self.field}" if self.field else "payload"
        return type(e)(where, f"{e.message} ({self.reason}; docs/tasks.md)")


def route_untyped(
    payload: Mapping[str, Any],
    task_class: str,
    rules: TasksSection,
    known_handlers: Collection[str],
) -> tuple[dict[str, Any], Route] | None:
    """The payload with the ``type`` its fields and class give it, and why; ``None`` when it
    has a ``type`` already or routing is off (``tasks.route_untyped``).

    First match wins:

    1. ``task_type`` (a string): the handler ``[tasks.task_types]`` maps it to, else the handler
       of that name if there is one (``known_handlers``: built-ins, ``[handlers]``, entry
       points); ``GoOrchestratorClient`` sends ``task_type: "rl_episode"``.
    2. ``argv``: ``shell`` (the payload a ``gpu_slurm`` job takes, run here as a process).
    3. ``command``: ``shell`` with ``argv`` = the command: a list of strings, or a command line
       split into words without a shell (one that needs a shell, with ``|``, ``;``, ``$``,
       globs or redirections, is InvalidArgumentError naming ``payload.command``).
    4. the class's default: ``[tasks.by_class] <class>``, else ``tasks.default_handler``
       (``echo``).

    The payload's other keys (``config_json``, ``session_id``, ...) are left as they are. The
    caller passes the class name as resolved (aliases such as ``gpu`` -> ``gpu_short``).
    """
    if "type" in payload or not rules.route_untyped:
        return None
    routed = dict(payload)
    task_type = payload.get("task_type")
    if isinstance(task_type, str) and task_type:
        mapped = rules.task_types.get(task_type)
        if mapped is not None:
            return _typed(routed, mapped, "task_type", f"tasks.task_types maps {task_type!r}")
        if task_type in known_handlers:
            return _typed(routed, task_type, "task_type", "the handler its task_type names")
    if "argv" in payload:
        return _typed(routed, SHELL, "argv", "a payload with argv runs it as a shell task")
    if "command" in payload:
        routed["argv"] = _command_argv(payload["command"])
        return _typed(routed, SHELL, "command", "a payload with a command runs it as a shell task")
    by_class = rules.by_class.get(task_class)
    if by_class is not None:
        return _typed(routed, by_class, "", f"the default handler of class {task_class!r}")
    return _typed(routed, rules.default_handler, "", "the default handler (tasks.default_handler)")


def _typed(
    payload: dict[str, Any], handler: str, field: str, reason: str
) -> tuple[dict[str, Any], Route]:
    payload["type"] = handler
    return payload, Route(handler, field, f"routed to {handler!r}: {reason}")


def _command_argv(command: Any) -> list[str]:
    if isinstance(command, list):
        if command and all(isinstance(a, str) for a in command):
            return list(command)
        raise InvalidArgumentError("payload.command", "must be a non-empty list of strings")
    if not isinstance(command, str):
        raise InvalidArgumentError(
            "payload.command",
            f"must be a list of strings or a command line, got {type(command).__name__}",
        )
    bad = _NEEDS_SHELL.search(command)
    if bad is not None:
        raise InvalidArgumentError(
            "payload.command",
            f"{command[:80]!r} needs a shell ({bad.group()!r}); rayinfra never runs a shell "
            'string: give the arguments as a list, e.g. ["sh", "-c", "..."] with argv',
        )
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise InvalidArgumentError("payload.command", f"cannot be split into words: {e}") from None
    if not argv:
        raise InvalidArgumentError("payload.command", "is empty")
    return argv


# --------------------------------------------------------------------------------------------
# GetMetrics: the task gauges the original server added


def original_task_metrics(
    metrics: Mapping[str, float], counts: Mapping[str, int]
) -> dict[str, float]:
    """The four task gauges the original's GetMetrics answered besides its registry's.

    ``tasks_pending``: tasks waiting in the scheduler now (``env_queue_depth``);
    ``tasks_running``: tasks dispatched and not finished (the ``orchestrator_inflight_tasks``
    series summed); ``tasks_completed``: completed tasks in the state store;
    ``tasks_tracked_total``: every task in the state store, in any state (finished ones until
    retention purges them; the original counted what its memory held since it started).
    ``counts`` is the store's tasks per status (the scheduler's cached count, at most a few
    seconds old)."""
    running = sum(v for k, v in metrics.items() if k.startswith("orchestrator_inflight_tasks{"))
    return {
        "tasks_pending": float(metrics.get("env_queue_depth", counts.get("pending", 0))),
        "tasks_running": float(running),
        "tasks_completed": float(counts.get("completed", 0)),
        "tasks_tracked_total": float(sum(counts.values())),
    }


# --------------------------------------------------------------------------------------------
# task states the original's clients know


def is_current_client(metadata_value: str | None) -> bool:
    """Whether a call's :data:`API_LEVEL_METADATA` value says the caller speaks the current
    protos (level 2 or later); a missing or unreadable value is the original (level 1)."""
    if metadata_value is None:
        return False
    try:
        return int(metadata_value.strip()) >= CURRENT_API_LEVEL
    except ValueError:
        return False


def original_status(st: TaskStatus) -> TaskStatus:
    """``st`` as a client of the original protos sees it: a ``cancelled`` task is ``failed``
    with the reason ``cancelled`` first in its error (the original knew pending, running,
    completed and failed, and its clients stop waiting on completed or failed only)."""
    if st.status != "cancelled":
        return st
    error = st.error
    if not error:
        error = CANCELLED_REASON
    elif not error.startswith(CANCELLED_REASON):
        error = f"{CANCELLED_REASON}: {error}"
    return dataclasses.replace(st, status="failed", error=error)

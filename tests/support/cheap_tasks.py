"""Generated requests made safe to send to a shared runtime: every task they would create is a
cheap no-op, and every id they create carries a prefix of the caller's.

Used by the property-based tests (tests/integration/test_http_schemathesis.py, tests/fuzz/): a
generated payload ``type`` that is a string becomes ``noop`` unless it is ``noop`` or ``echo``
already (nothing sleeps, runs code or calls a user handler), and so does a ``task_type`` that
would route a payload without ``type`` to a handler. A non-string ``type`` is left alone: it is
refused before anything is queued. A payload without ``type`` that has ``argv`` or ``command``
would route to ``shell``, which is refused for these callers: they never send a token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from rayinfra import json_input
from rayinfra.compat import decode_wire_map

CHEAP_TYPES = ("noop", "echo")


#: payload keys that route a payload without ``type`` to a handler (rayinfra.compat.ROUTE_FIELDS)
ROUTING_KEYS = ("task_type", "argv", "command")


def cheap_payload(payload: Any, *, noop_only: bool = False) -> Any:
    """A JSON payload whose task, if it is accepted, is a no-op (anything else as it came).

    ``noop_only``: ``echo`` becomes ``noop`` too, and so does a payload without ``type`` or a
    key that routes it (it would run the default handler, ``echo``): an echo's result is its
    payload, and thousands of hostile payloads as results make every later read of the change
    feed heavy (the fuzzer's case)."""
    if not isinstance(payload, dict):
        return payload
    out = dict(payload)
    keep = ("noop",) if noop_only else CHEAP_TYPES
    ptype = out.get("type")
    if isinstance(ptype, str) and ptype not in keep:
        out["type"] = "noop"
    if "type" not in out and isinstance(out.get("task_type"), str):
        out["task_type"] = "noop"
    if noop_only and "type" not in out and not any(k in out for k in ROUTING_KEYS):
        out["type"] = "noop"
    return out


def make_cheap(body: Any, id_prefix: str = "st-", *, noop_only: bool = False) -> Any:
    """A ``POST /queue/submit`` body made safe to send: its payload cheap
    (:func:`cheap_payload`), a non-empty string id prefixed with ``id_prefix``."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    if isinstance(out.get("id"), str) and out["id"]:
        out["id"] = f"{id_prefix}{out['id']}"
    if "payload" in out:
        out["payload"] = cheap_payload(out["payload"], noop_only=noop_only)
    elif noop_only:  # no payload: {} runs the default handler
        out["payload"] = {"type": "noop"}
    return out


#: the wire payload keys :func:`cheap_payload` reads (payload_json: its keys win when merged)
_DECIDING = ("type", *ROUTING_KEYS, "payload_json")


def cheap_wire_payload(
    m: Mapping[str, str], *, original: bool, noop_only: bool = False
) -> dict[str, str]:
    """A gRPC ``map<string,string>`` payload whose decoded form (as the gateway decodes it,
    ``payload_json`` merged) is cheap; one the gateway refuses to decode is returned as it came.

    Only the keys :func:`cheap_payload` reads are decoded (the fuzzer's other values are
    often megabytes of JSON, and decoding them here doubled the cost of every request): a
    request whose other values the gateway refuses is refused whatever this changes."""
    out = dict(m)
    deciding = {k: out[k] for k in _DECIDING if k in out}
    try:
        decoded = decode_wire_map(deciding, original=original)
    except ValueError:  # InvalidArgumentError included: refused by the gateway
        return out

    def fixed(p: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], cheap_payload(p, noop_only=noop_only))

    def changed(p: dict[str, Any]) -> bool:
        f = fixed(p)
        return any(f.get(k) != p.get(k) for k in ("type", "task_type"))

    if not changed(decoded):
        return out
    if "payload_json" in out:  # its keys win: make its object cheap first
        merged = json_input.loads(out["payload_json"])  # it decoded above: an object
        if "type" in merged or any(k in merged for k in ROUTING_KEYS):
            out["payload_json"] = deciding["payload_json"] = json.dumps(fixed(merged))
            decoded = decode_wire_map(deciding, original=original)
    want = fixed(decoded)
    for key in ("type", "task_type"):
        if want.get(key) != decoded.get(key):
            out[key] = deciding[key] = want[key]  # "noop": a string however it is decoded
    assert not changed(decode_wire_map(deciding, original=original)), out
    return out


def cheap_workflow(spec: Any, id_prefix: str, *, noop_only: bool = False) -> Any:
    """A workflow spec (JSON) whose ``id`` is prefixed and whose task nodes' payloads are cheap."""
    if not isinstance(spec, dict):
        return spec
    out = dict(spec)
    if isinstance(out.get("id"), str) and out["id"]:
        out["id"] = f"{id_prefix}{out['id']}"
    nodes = out.get("nodes")
    if isinstance(nodes, list):
        out["nodes"] = [_cheap_node(n, noop_only) for n in nodes]
    return out


def _cheap_node(node: Any, noop_only: bool) -> Any:
    if not isinstance(node, dict) or not isinstance(node.get("task"), dict):
        return node
    task = dict(node["task"])
    if "payload" in task:
        task["payload"] = cheap_payload(task["payload"], noop_only=noop_only)
    return {**node, "task": task}

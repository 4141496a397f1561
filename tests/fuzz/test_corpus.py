"""Every input the fuzzers found a bug with, replayed on every run (tests/fuzz/corpus/).

``corpus/grpc/*.json``: ``{"target": "<service>/<method>", "request_b64": ..., "found": ...}``,
the request bytes as hypothesis made them (the target's guard applies, as when fuzzing).
``corpus/http/*.json``: ``{"route": "<server> <METHOD> <path>", "method", "target", "headers",
"body_b64", "chunked", "found"}``, the request as it was sent. ``found`` says what broke and what
fixed it. Each entry must satisfy the same property as the fuzzer's examples.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.conftest import Fuzzing
from tests.fuzz.grpc_targets import discover, guarded, judge
from tests.fuzz.http_targets import ROUTES, HttpRequest
from tests.fuzz.http_targets import judge as judge_http

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).parent / "corpus"
GRPC = {t.id: t for t in discover()}
HTTP = {r.id: r for r in ROUTES}


def entries(kind: str) -> list[Any]:
    return [
        pytest.param(json.loads(p.read_text()), id=p.stem)
        for p in sorted((CORPUS / kind).glob("*.json"))
    ]


def test_the_corpus_names_known_targets() -> None:
    grpc_entries = [e.values[0] for e in entries("grpc")]
    http_entries = [e.values[0] for e in entries("http")]
    assert grpc_entries and http_entries
    for e in grpc_entries:
        assert e["target"] in GRPC and e["found"], e
    for e in http_entries:
        assert e["route"] in HTTP and e["found"], e


@pytest.mark.parametrize("entry", entries("grpc"))
def test_grpc_corpus(fuzzing: Fuzzing, unharmed: None, entry: dict[str, Any]) -> None:
    target = GRPC[entry["target"]]
    raw = base64.b64decode(entry["request_b64"])
    sent = guarded(target, raw, fuzzing.prefixes, fuzzing.original_decoding)
    outcome = fuzzing.caller.call(target, sent)
    assert judge(target, outcome) is None, (outcome, entry["found"])
    if "expect" in entry:
        assert outcome.code == entry["expect"], (outcome, entry["found"])


@pytest.mark.parametrize("entry", entries("http"))
def test_http_corpus(fuzzing: Fuzzing, unharmed: None, entry: dict[str, Any]) -> None:
    route = HTTP[entry["route"]]
    request = HttpRequest(
        entry["method"],
        entry["target"].encode("latin-1"),
        tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in entry["headers"]),
        base64.b64decode(entry["body_b64"]) if entry.get("body_b64") is not None else None,
        bool(entry.get("chunked")),
    )
    response = request.send(fuzzing.http(route.server))
    verdict = judge_http(response, route)
    assert verdict.ok, (verdict.why, entry["found"])
    if "expect" in entry:
        assert response.status == entry["expect"], (response, entry["found"])

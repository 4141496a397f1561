"""schemathesis against the live HTTP APIs of the session runtime.

The schemas are the gateway's own ``/openapi.json`` documents, fetched from the running servers
(orchestrator :9097 and env-manager :50101 of the session runtime), so what is tested is what a
client sees. For every operation of each document, schemathesis generates valid and (where the
operation takes input) schema-violating requests and sends them over loopback; the checks are:
no 5xx, and responses that conform to the document (status code documented, content type, JSON
body schema, headers). It runs through schemathesis' Python API (``APIOperation.as_strategy``
under hypothesis' ``@given``): its pytest integration's lazy ``from_fixture`` loader, the one a
schema known only at run time needs, fails under pytest 9.2 (it sets ``node._nodeid``, which
pytest no longer has).

Safety: the only operations that start work are ``POST /queue/submit`` and ``POST
/workflows/{id}/runs``; the runs' workflow ids are generated, so they name no workflow (404). Before it is sent, every
generated task is made cheap and private: a payload ``type`` that is a string is replaced by
``noop`` unless it is ``noop`` or ``echo`` already (nothing sleeps, runs code or calls user
handlers; a non-string type is left alone: it is rejected with 400 before anything is queued;
a ``task_type`` that would route a typeless payload to a handler becomes ``noop`` too: see
tests/support/cheap_tasks.py), and a generated id gets the prefix ``st-`` so it never collides
with an id another test uses.
Requests carry no token, so ``shell``/``python`` could not run anyway (403). Every accepted task
is a noop; ``MAX_EXAMPLES`` bounds how many there are.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rayinfra.config import dial_addr
from tests.integration.conftest import Runtime
from tests.support.cheap_tasks import make_cheap

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 40  # per operation and generation mode: about 1 s each on loopback
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: every operation each live document must have, and nothing else (a new route fails the
#: fixture until it is listed here, so every operation is exercised)
OPERATIONS = {
    "orchestrator_http_addr": {
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/queue/submit"),
        ("GET", "/queue/status"),
        ("GET", "/tasks"),
        ("GET", "/tasks/{task_id}"),
        ("GET", "/slurm/status/{task_id}"),
        ("GET", "/workflows"),
        ("POST", "/workflows"),
        ("GET", "/workflows/{workflow_id}"),
        ("PUT", "/workflows/{workflow_id}"),
        ("GET", "/workflows/{workflow_id}/history"),
        ("POST", "/workflows/{workflow_id}/runs"),
        ("GET", "/workflows/{workflow_id}/runs"),
        ("GET", "/workflow-runs/{run_id}"),
        ("POST", "/workflow-runs/{run_id}/cancel"),
    },
    "env_manager_http_addr": {("GET", "/health"), ("GET", "/metrics")},
}


#: statuses generation must reach (default {200}): accepted and rejected submits, unknown ids
SEEN = {
    ("POST", "/queue/submit"): {200, 400},
    ("GET", "/tasks"): {200, 400},
    ("GET", "/tasks/{task_id}"): {404},
    ("GET", "/slurm/status/{task_id}"): {404},
    ("POST", "/workflows"): {400},
    ("GET", "/workflows/{workflow_id}"): {404},
    ("PUT", "/workflows/{workflow_id}"): {400},
    ("GET", "/workflows/{workflow_id}/history"): {404},
    ("POST", "/workflows/{workflow_id}/runs"): {404},
    ("GET", "/workflows/{workflow_id}/runs"): {404},
    ("GET", "/workflow-runs/{run_id}"): {404},
    ("POST", "/workflow-runs/{run_id}/cancel"): {404},
}


@pytest.fixture(scope="module")
def schemas(rt: Runtime) -> dict[str, Any]:
    """The live OpenAPI documents of the session runtime's two HTTP servers."""
    out = {}
    for key, expected in OPERATIONS.items():
        base = f"http://{dial_addr(getattr(rt.config.gateway, key))}"
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=30)
        assert schema.get_base_url().rstrip("/") == base  # requests go to the live server
        live = set()
        for r in schema.get_all_operations():
            assert isinstance(r, Ok), r  # an operation schemathesis cannot read is a failure
            live.add((r.ok().method.upper(), r.ok().path))
        assert live == expected, live
        out[key] = schema
    return out


def _has_inputs(op: Any) -> bool:
    return bool(op.path_parameters or op.query or op.headers or op.body)


@pytest.mark.parametrize(
    ("server", "method", "path"),
    sorted((k, m, p) for k, ops in OPERATIONS.items() for m, p in ops),
)
def test_generated_requests(schemas: dict[str, Any], server: str, method: str, path: str) -> None:
    """Valid and (where an operation takes input) schema-violating requests: no 5xx, and every
    response conforms to the document."""
    op = schemas[server][path][method]
    strategies = [op.as_strategy(GenerationMode.POSITIVE)]
    if _has_inputs(op):
        strategies.append(op.as_strategy(GenerationMode.NEGATIVE))
    sent: list[int] = []

    @settings(
        max_examples=MAX_EXAMPLES * len(strategies),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*strategies))
    def run(case: Any) -> None:
        if (method, path) == ("POST", "/queue/submit"):
            case.body = make_cheap(case.body)
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        sent.append(response.status_code)

    run()
    # requests really went out, and generation reached both sides of each operation
    assert SEEN.get((method, path), {200}) <= set(sent), sorted(set(sent))


#: a body just over gateway.max_request_bytes (its bulk in a key the server ignores)
OVERSIZED = "oversized"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"payload": {"type": "shell", "argv": ["true"]}}, 403),
        ({"id": "st-conflict", "payload": {"type": "echo", "n": 2}}, 409),
        (OVERSIZED, 413),
        ({"class": "gpu_slurm", "payload": {"argv": ["true"]}}, 403),
    ],
    ids=["403-untrusted", "409-conflict", "413-too-large", "403-gpu-slurm-untrusted"],
)
def test_documented_error_statuses_are_in_the_openapi_document(
    rt: Runtime, schemas: dict[str, Any], body: Any, status: int
) -> None:
    """Each error status /queue/submit answers is in its document, with its error body."""
    if body == OVERSIZED:
        body = {"id": "st-huge", "junk": "x" * rt.config.gateway.max_request_bytes}
    op = schemas["orchestrator_http_addr"]["/queue/submit"]["POST"]
    first = op.Case(body={"id": "st-conflict", "payload": {"type": "echo", "n": 1}})
    first.call_and_validate(checks=CHECKS, timeout=30)  # 200: the id the 409 row reuses
    case = op.Case(body=body, media_type="application/json")
    response = case.call(timeout=30)
    assert response.status_code == status  # the status the docs promise ...
    case.validate_response(response, checks=CHECKS)  # ... is documented, body and all


def test_the_safety_hook_keeps_generated_tasks_cheap() -> None:
    assert make_cheap({"id": "x", "payload": {"type": "sleep", "seconds": 1e9}}) == {
        "id": "st-x",
        "payload": {"type": "noop", "seconds": 1e9},
    }
    assert make_cheap({"payload": {"type": "shell"}}) == {"payload": {"type": "noop"}}
    assert make_cheap({"payload": {"type": "echo", "a": 1}}) == {
        "payload": {"type": "echo", "a": 1}
    }
    assert make_cheap({"id": "", "payload": {"type": 3}}) == {"id": "", "payload": {"type": 3}}
    # a payload without type is routed by its task_type (sleep is a handler): made a noop too
    assert make_cheap({"payload": {"task_type": "sleep", "seconds": 9}}) == {
        "payload": {"task_type": "noop", "seconds": 9}
    }
    assert make_cheap([1]) == [1]

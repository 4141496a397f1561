"""Every HTTP route of the gateway's two apps, fuzzed over real loopback HTTP/1.1.

For each route (:data:`~tests.fuzz.http_targets.ROUTES`, checked against the live OpenAPI
documents and the apps' routers) hypothesis sends hostile requests written byte for byte: path
parameters with ``../``, 10,000 characters, percent escapes valid and broken; query strings with
junk; bodies nested 100,000 deep, 100,000 items wide, not UTF-8, with NaN/Infinity literals or
of the wrong types, with a length or chunked; other methods than the route's. The property
(:func:`~tests.fuzz.http_targets.judge`): a 2xx, or a 4xx with a JSON error naming the field
where one is to blame; never a 5xx, a redirect or a hang. The CI profile runs 10,000 examples per
route (the full one 30,000); the module's ``unharmed`` fixture then checks the runtime (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import settings
from starlette.routing import Route as StarletteRoute

from rayinfra.api.auth import Auth
from rayinfra.api.http import env_manager_app, orchestrator_app
from rayinfra.control import ControlPlane
from tests.fuzz.conftest import Fuzzing
from tests.fuzz.http_targets import ENV, ORCH, ROUTES, HttpRequest, Route, judge
from tests.fuzz.runner import LONG_PROFILES, profile_name

pytestmark = pytest.mark.integration

TEST_TIMEOUT_S = 1800 if profile_name() in LONG_PROFILES else 600
BODY_ROUTES = [r for r in ROUTES if r.body]


def _app_routes() -> set[tuple[str, str, str]]:
    """(server, method, path) of every route the two apps' routers have (HEAD left out:
    Starlette adds it to every GET)."""
    control: Any = ControlPlane(caller=None)  # type: ignore[arg-type] - never called here
    apps = {
        ORCH: orchestrator_app(control, Auth(), max_request_bytes=1),
        ENV: env_manager_app(control, Auth()),
    }
    out = set()
    for server, app in apps.items():
        for r in app.routes:
            assert isinstance(r, APIRoute | StarletteRoute), r
            out |= {(server, m, r.path) for m in r.methods or () if m != "HEAD"}
    return out


def test_every_route_is_fuzzed(fuzzing: Fuzzing) -> None:
    """The table is exactly the apps' routes, and every operation of each live OpenAPI
    document is in it: a new route fails here until it is classified."""
    table = {(r.server, r.method, r.path) for r in ROUTES}
    assert len(table) == len(ROUTES)
    assert _app_routes() == table
    for server in (ORCH, ENV):
        with fuzzing.clients.http(server) as c:
            doc = c.get("/openapi.json").json()
        live = {(server, m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert live <= table, sorted(live - table)


@pytest.mark.timeout(TEST_TIMEOUT_S)
@pytest.mark.parametrize("route", ROUTES, ids=[r.id for r in ROUTES])
def test_fuzz_http(fuzzing: Fuzzing, unharmed: None, route: Route) -> None:
    tally = fuzzing.run("http", route.id)
    print(tally.summary())
    assert tally.examples >= settings.get_profile(profile_name()).max_examples, tally.summary()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=[r.id for r in BODY_ROUTES])
def test_http_body_over_max_request_bytes(
    fuzzing: Fuzzing, unharmed: None, route: Route, chunked: bool
) -> None:
    """A body one byte over ``gateway.max_request_bytes`` (valid JSON otherwise) is 413 naming
    the body and the limit, with a length or chunked, on every route that takes a body."""
    limit = fuzzing.clients.max_request
    head = json.dumps({"id": "x", "junk": ""}).encode()[:-2]
    body = head + b"x" * (limit + 1 - len(head) - 2) + b'"}'
    assert len(body) == limit + 1
    target = route.path.replace("{workflow_id}", fuzzing.prefixes.of("r") + "x").encode()
    request = HttpRequest(
        route.method, target, ((b"content-type", b"application/json"),), body, chunked
    )
    response = request.send(fuzzing.http(route.server))
    assert judge(response, route).ok
    err = json.loads(response.body)
    assert (response.status, err["field"]) == (413, "body"), err
    assert f"limit of {limit} bytes (gateway.max_request_bytes)" in err["error"]


@pytest.mark.parametrize(
    ("server", "path"), [(ORCH, "/health"), (ORCH, "/tasks"), (ENV, "/metrics")]
)
def test_http_declared_body_over_the_limit_on_a_route_without_one(
    fuzzing: Fuzzing, unharmed: None, server: str, path: str
) -> None:
    """Every route of both apps refuses a declared Content-Length over the limit before
    reading it (413), not just the routes that read a body."""
    limit = fuzzing.clients.max_request
    with httpx.Client(base_url=f"http://{fuzzing.clients.addr(server)}", timeout=30) as c:
        r = c.request("GET", path, content=b"x" * (limit + 1))
    assert r.status_code == 413, r.text
    assert r.json()["field"] == "body"
    assert "gateway.max_request_bytes" in r.json()["error"]

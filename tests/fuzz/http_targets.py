"""Every HTTP route of the gateway's two apps, hostile requests for each, and what keeps them
harmless to a shared runtime.

A request is drafted (method, path parameters, query, headers, body), made safe by the route's
guard (ids it creates get the run's prefix, task payloads become no-ops, a workflow run it
starts names no workflow), then written out byte for byte (:mod:`tests.fuzz.rawhttp`): path
parameters percent-encoded, left raw (``../`` and all) or with broken escapes, query strings
with junk keys and invalid escapes, bodies that are deep, huge, not UTF-8, NaN-laden or of the
wrong type, sent with a length or chunked.

:data:`ROUTES` lists every route; one the apps serve and the table does not fails
``test_every_route_is_fuzzed`` until someone decides whether it is safe to fuzz.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from rayinfra import json_input
from tests.fuzz import hostile
from tests.fuzz.grpc_targets import Prefixes
from tests.fuzz.rawhttp import HttpResponse, RawHttp
from tests.support.cheap_tasks import cheap_workflow, make_cheap

ORCH, ENV = "orchestrator_http_addr", "env_manager_http_addr"
PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Draft:
    """A request before it is written out."""

    method: str
    params: dict[str, str]  # path parameters, decoded
    encoding: str  # how path parameters are written: quote, raw, broken
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None
    chunked: bool


@dataclass(frozen=True)
class HttpRequest:
    """A request as it is sent (and as the corpus keeps it)."""

    method: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes | None = None
    chunked: bool = False

    def send(self, client: RawHttp) -> HttpResponse:
        if self.chunked and self.body is not None:
            size = 1 + len(self.body) // 3
            chunks = [self.body[i : i + size] for i in range(0, len(self.body), size)]
            return client.request(self.method, self.target, self.headers, chunks=chunks)
        return client.request(self.method, self.target, self.headers, body=self.body)


Guard = Callable[[Draft, Prefixes], Draft]


@dataclass(frozen=True)
class Route:
    server: str  # the gateway config key of the app's server
    method: str
    path: str
    guard: Guard | None = None  # None: read-only, safe with any request
    body: str = ""  # what its body is: submit, workflow, run (empty: takes none)
    query: tuple[str, ...] = ()  # the query parameters it reads

    @property
    def id(self) -> str:
        return f"{self.server.split('_')[0]} {self.method} {self.path}"

    @property
    def params(self) -> list[str]:
        return PARAM.findall(self.path)


# ----------------------------------------------------------------------------- guards


def _json_of(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json_input.loads(body)
    except ValueError:
        return None


def _with_body(d: Draft, fix: Callable[[Any], Any]) -> Draft:
    parsed = _json_of(d.body)
    fixed = fix(parsed)
    if parsed is None or fixed == parsed:
        return d
    return replace(d, body=json.dumps(fixed).encode())


def _prefix_params(d: Draft, prefix: str) -> Draft:
    return replace(d, params={k: prefix + v for k, v in d.params.items()})


def _submit(d: Draft, p: Prefixes) -> Draft:
    return _with_body(d, lambda b: make_cheap(b, p.of("t"), noop_only=True))


def _create_workflow(d: Draft, p: Prefixes) -> Draft:
    return _with_body(d, lambda b: cheap_workflow(b, p.of("w"), noop_only=True))


def _put_workflow(d: Draft, p: Prefixes) -> Draft:
    return _create_workflow(_prefix_params(d, p.of("w")), p)


def _run_ids(d: Draft, p: Prefixes) -> Draft:
    return _prefix_params(d, p.of("r"))


ROUTES: tuple[Route, ...] = (
    Route(ORCH, "GET", "/health"),
    Route(ORCH, "GET", "/metrics"),
    Route(ORCH, "POST", "/queue/submit", _submit, body="submit"),
    Route(ORCH, "GET", "/queue/status"),
    Route(ORCH, "GET", "/tasks", query=("status", "class", "limit", "after")),
    Route(ORCH, "GET", "/tasks/{task_id}"),
    Route(ORCH, "GET", "/slurm/status/{task_id}"),
    Route(ORCH, "GET", "/workflows"),
    Route(ORCH, "POST", "/workflows", _create_workflow, body="workflow"),
    Route(ORCH, "GET", "/workflows/{workflow_id}"),
    Route(ORCH, "PUT", "/workflows/{workflow_id}", _put_workflow, body="workflow"),
    Route(ORCH, "GET", "/workflows/{workflow_id}/history"),
    Route(ORCH, "POST", "/workflows/{workflow_id}/runs", _run_ids, body="run"),
    Route(ORCH, "GET", "/workflows/{workflow_id}/runs", query=("limit",)),
    Route(ORCH, "GET", "/workflow-runs/{run_id}"),
    Route(ORCH, "POST", "/workflow-runs/{run_id}/cancel", _run_ids),
    # FastAPI's own routes, on both apps
    *(
        Route(server, "GET", path, query=("oauth2-redirect",) if "oauth2" in path else ())
        for server in (ORCH, ENV)
        for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
    ),
    Route(ENV, "GET", "/health"),
    Route(ENV, "GET", "/metrics"),
)


# ----------------------------------------------------------------------------- drafting

_BROKEN_ESCAPES = ("%", "%z", "%zz", "%ff", "%c0%af", "%00", "%2", "%25")
_CONTENT_TYPES = (
    b"application/json",
    b"application/json; charset=latin-1",
    b"text/plain",
    b"multipart/form-data; boundary=x",
    b"application/x-www-form-urlencoded",
    b"",
)
_NUMBERS = st.one_of(
    hostile.integers(-(2**70), 2**70),
    hostile.floats(),
    hostile.pick(["1", "high", True, None, [], {}]),
)
_ANY = hostile.json_values()
_PAYLOADS = st.one_of(
    st.dictionaries(hostile.texts("key"), _ANY, max_size=5),
    st.fixed_dictionaries({"type": hostile.texts()}, optional={"seconds": _NUMBERS}),
    _ANY,
)
_BODIES: dict[str, st.SearchStrategy[Any]] = {
    "submit": st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(hostile.texts(), _ANY),
            "class": st.one_of(hostile.texts(), _ANY),
            "payload": _PAYLOADS,
            "priority": _NUMBERS,
            "timeout_seconds": _NUMBERS,
            "workflow_id": st.one_of(hostile.texts(), _ANY),
            "extra": _ANY,
        },
    ),
    "workflow": st.fixed_dictionaries(
        {},
        optional={
            "id": hostile.texts(),
            "name": st.one_of(hostile.texts(), _ANY),
            "description": hostile.texts(),
            "nodes": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "id": hostile.texts(),
                            "name": hostile.texts(),
                            "type": st.one_of(
                                hostile.pick(["task", "signature", "training", "custom"]),
                                hostile.texts(),
                            ),
                            "task": st.fixed_dictionaries(
                                {},
                                optional={
                                    "class": hostile.texts(),
                                    "payload": _PAYLOADS,
                                    "priority": _NUMBERS,
                                    "timeout_s": _NUMBERS,
                                    "retries": _NUMBERS,
                                },
                            ),
                        },
                    ),
                    max_size=4,
                ),
                _ANY,
            ),
            "edges": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"source": hostile.texts(), "target": hostile.texts()},
                        optional={"kind": hostile.texts()},
                    ),
                    max_size=3,
                ),
                _ANY,
            ),
        },
    ),
    "run": st.fixed_dictionaries(
        {}, optional={"idempotency_key": st.one_of(hostile.texts(), _ANY), "input": _ANY}
    ),
}
_QUERY_VALUES = st.one_of(
    hostile.texts(),
    hostile.pick(["0", "1", "-1", "10001", "1e3", "1.5", "NaN", "abc", "pending", "cpu_short"]),
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@functools.cache
def bodies(kind: str) -> st.SearchStrategy[bytes]:
    """Request bodies: hostile JSON bytes, or a body of the route's kind with hostile values."""
    generic = hostile.json_bytes()
    if kind in _BODIES:
        return st.one_of(_BODIES[kind].map(_dump), generic)
    return generic


def _encode_param(value: str, how: str) -> bytes:
    if how == "quote":
        return quote(value, safe="").encode()
    # raw: traversal and separators as they are (what is not URL-safe is still escaped)
    text = quote(value, safe="/:@!$&'()*+,;=.~")
    if how == "broken":
        text += "%zz"
    return text.encode()


#: what h11 accepts in a request target: visible ASCII (the rest is escaped)
_VISIBLE = "".join(chr(c) for c in range(33, 127))


def _query(pairs: list[tuple[str, str, bool]], broken: str) -> bytes:
    text = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" if escaped else f"{k}={v}"
        for k, v, escaped in pairs
    )
    return quote(text + broken, safe=_VISIBLE).encode()


@functools.cache
def _queries(names: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Query strings: known parameters and junk keys, hostile values, escaped or raw, some
    ending in a broken escape."""
    keys = st.one_of(hostile.pick(names), hostile.texts()) if names else hostile.texts()
    pair = st.tuples(keys, _QUERY_VALUES, st.booleans())
    broken = st.one_of(st.just(""), hostile.pick(_BROKEN_ESCAPES))
    return st.builds(_query, st.lists(pair, max_size=3), broken)


_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_AUTH = st.tuples(hostile.pick([b"Bearer ", b"Basic ", b""]), hostile.texts()).map(
    lambda t: t[0] + bytes(b if 32 <= b < 127 else 63 for b in t[1].encode()[:300])
)


def _headers(ctype: bytes, auth: bytes | None) -> tuple[tuple[bytes, bytes], ...]:
    out = [(b"content-type", ctype)] if ctype else []
    if auth is not None:  # never a valid token: the fuzzer is an untrusted caller
        out.append((b"authorization", auth))
    return tuple(out)


@functools.cache
def drafts(route: Route) -> st.SearchStrategy[Draft]:
    """Drafts for ``route`` (one strategy per route, built once: drawing is the fuzzer's cost)."""
    method = st.one_of(
        st.just(route.method), st.just(route.method), st.just(route.method), hostile.pick(_METHODS)
    )
    params = st.fixed_dictionaries({p: hostile.texts() for p in route.params})
    encoding = hostile.pick(["quote", "quote", "raw", "broken"])
    query = _queries(route.query) if route.query else st.one_of(st.just(b""), _queries(()))
    headers = st.builds(
        _headers,
        hostile.pick(_CONTENT_TYPES),
        st.one_of(st.none(), st.none(), st.none(), _AUTH),
    )
    body = bodies(route.body) if route.body else st.one_of(st.none(), st.none(), bodies(""))
    return st.builds(Draft, method, params, encoding, query, headers, body, st.booleans()).map(
        lambda d: d if d.body is not None or not d.chunked else replace(d, chunked=False)
    )


def render(route: Route, d: Draft) -> HttpRequest:
    path = PARAM.sub(lambda m: _encode_param(d.params[m.group(1)], d.encoding).decode(), route.path)
    target = path.encode() + (b"?" + d.query if d.query else b"")
    return HttpRequest(d.method, target, d.headers, d.body, d.chunked)


def requests(route: Route, prefixes: Prefixes) -> st.SearchStrategy[HttpRequest]:
    """Requests for ``route``, guarded and written out."""
    guard = route.guard
    return drafts(route).map(lambda d: render(route, guard(d, prefixes) if guard else d))


# ----------------------------------------------------------------------------- the property

#: statuses whose error names the field to blame (400: the request field; 404: what was not
#: found, or the path; 405: the method; 413: the body)
NAMES_A_FIELD = frozenset({400, 404, 405, 413})


@dataclass
class Verdict:
    ok: bool
    why: str = ""
    json: Any = field(default=None)


def judge(response: HttpResponse, route: Route) -> Verdict:
    """A 2xx, or a 4xx with a JSON error body naming the field where one is to blame; never
    a 5xx, a redirect or an error that is not JSON."""
    status = response.status
    if 200 <= status < 300:
        if route.path == "/metrics" or route.path.startswith(("/docs", "/redoc")):
            return Verdict(True)
        try:
            return Verdict(True, json=json.loads(response.body))
        except ValueError:
            return Verdict(False, f"{status} with a body that is not JSON: {response.body[:200]!r}")
    if not 400 <= status < 500:
        return Verdict(False, f"status {status}: {response.body[:300]!r}")
    if response.content_type != "application/json":
        return Verdict(False, f"{status} {response.content_type}: {response.body[:300]!r}")
    try:
        err = json.loads(response.body)
    except ValueError:
        return Verdict(False, f"{status} with a body that is not JSON: {response.body[:200]!r}")
    if not isinstance(err, dict) or not isinstance(err.get("error"), str) or not err["error"]:
        return Verdict(False, f"{status} without an error message: {err!r:.300}")
    if status in NAMES_A_FIELD and not (isinstance(err.get("field"), str) and err["field"]):
        return Verdict(False, f"{status} naming no field: {err!r:.300}")
    if status == 429 and "retry-after" not in response.headers:
        return Verdict(False, "429 without Retry-After")
    return Verdict(True, json=err)

"""The HTTP APIs: the orchestrator's (:9097) and the env-manager's health/metrics (:50101).

FastAPI apps that translate to the control actors through :class:`~rayinfra.control.ControlPlane`.
Errors are JSON ``{"error": message, "field": name}`` with a 4xx naming the field (an unknown
route: ``path``, a method the route does not take: ``method``); an actor that cannot be reached
is 503; a body over ``gateway.max_request_bytes`` is 413 (``field: "body"``), on every route of
both apps; a client over its limits (:mod:`rayinfra.api.limits`) is 429 with ``Retry-After``.
Every status a route can answer is in its OpenAPI document. Served by ``uvicorn.Server.serve()``
on the gateway actor's loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from rayinfra import errors, json_input
from rayinfra._version import __version__
from rayinfra.admission import SLURM_CLASS
from rayinfra.api.auth import Auth
from rayinfra.api.limits import ClientLimiter
from rayinfra.config import GatewaySection
from rayinfra.control import LIST_LIMIT_MAX, ORCHESTRATOR_METRICS, ControlPlane
from rayinfra.errors import InvalidArgumentError
from rayinfra.scheduling.tasks import TASK_STATES, decode_timeout_seconds

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: the env-manager app's body cap when the gateway does not pass its config's
DEFAULT_MAX_REQUEST_BYTES = GatewaySection.model_fields["max_request_bytes"].default
SLURM_SUBMIT_WAIT_S = 10.0  # POST /queue/submit of a gpu_slurm task waits this long for sbatch

SUBMIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "task id (generated when missing)"},
        "class": {"type": "string", "description": "task class (default cpu_short)"},
        "payload": {"type": "object", "description": "JSON object; `type` picks the handler"},
        "priority": {"type": "integer", "description": "higher runs first"},
        "timeout_seconds": {
            "type": "number",
            "description": "seconds, > 0; absent or null = the class default",
        },
        "workflow_id": {"type": "string"},
    },
}


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of an object: its ``properties`` (in order), the ``required`` ones named."""
    return {"type": "object", "required": required, "properties": properties}


#: every error answer: what is wrong and, when one request field is to blame, which
ERROR_SCHEMA = _object(
    ["error"],
    error={"type": "string"},
    field={"type": "string", "description": "the offending field, when one is to blame"},
)
SUBMIT_REPLY_SCHEMA = _object(
    ["ok", "id"],
    ok={"type": "boolean"},
    id={"type": "string", "description": "the task id (generated when none was given)"},
    slurm_job_id={"type": "string", "description": "gpu_slurm: the task's Slurm job"},
    status={
        "type": "string",
        "enum": ["submitted", "pending"],
        "description": "gpu_slurm: submitted (sbatch took it), or pending (not yet)",
    },
)
ORCHESTRATOR_HEALTH_SCHEMA = _object(
    ["status", "healthy", "services"],
    status={"type": "string", "enum": ["ok", "unhealthy"]},
    healthy={"type": "boolean"},
    services={
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "each control actor and selected service: its state; `orchestrator`: "
        "a summary (healthy, degraded: ..., unhealthy: ...)",
    },
)
ENV_MANAGER_HEALTH_SCHEMA = _object(
    ["status", "service", "timestamp"],
    status={"type": "string", "enum": ["healthy", "unhealthy"]},
    service={"type": "string"},
    timestamp={"type": "string", "description": "ISO 8601, UTC"},
)
TASK_LIST_LIMIT_DEFAULT = 100
TASK_LIST_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(TASK_STATES)},
        "description": "only tasks in this state",
    },
    {
        "name": "class",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "only tasks of this class",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": LIST_LIMIT_MAX,
            "default": TASK_LIST_LIMIT_DEFAULT,
        },
    },
    {
        "name": "after",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "the `next` of the previous page (absent: from the newest task)",
    },
]
TASK_PAGE_SCHEMA = _object(
    ["items", "next"],
    items={"type": "array", "items": {"type": "object"}, "description": "as GET /tasks/{id}"},
    next={
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "the cursor of the page after this one (pass it as `after`); null: last",
    },
)
#: documented on every route: the middleware answers them before any route runs
UNAUTHORIZED = "auth is required and the request has no valid `authorization: Bearer <token>`"
TOO_LARGE = "the body is over gateway.max_request_bytes"
TOO_MANY = (
    "the client is over its limits (gateway.client_rate_per_s, gateway.client_max_inflight): "
    "retry after Retry-After seconds"
)
ACTOR_DOWN = "a control actor cannot be reached right now"


RETRY_AFTER_HEADER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "string"},
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(
    failures: dict[int, str | dict[str, Any]], ok: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI ``responses`` map: each error status with its description (a JSON error body)
    or its full entry, the 401, 413 and 429 every route can answer, and ``ok`` for 200 when
    given. (Error bodies are JSON on every route, ``/metrics`` included, so each names its
    content type.)"""
    out: dict[int | str, dict[str, Any]] = {} if ok is None else {200: ok}
    for status, entry in {401: UNAUTHORIZED, 413: TOO_LARGE, 429: TOO_MANY, **failures}.items():
        out[status] = _json(entry, ERROR_SCHEMA) if isinstance(entry, str) else entry
    out[429] = {**out[429], "headers": {"Retry-After": RETRY_AFTER_HEADER}}
    return out


def _health_responses(schema: dict[str, Any], healthy: str, unhealthy: str) -> dict[int | str, Any]:
    """A ``/health`` route's responses: 200 when ``healthy``, 503 when ``unhealthy``."""
    return _responses({503: _json(unhealthy, schema)}, _json(healthy, schema))


def _error(
    status: int, message: str, field: str = "", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(e: BaseException) -> JSONResponse:
    """The HTTP answer for an error raised on the way to the control actors."""
    if isinstance(e, errors.TaskConflictError):
        return _error(409, e.message, e.field)
    if isinstance(e, errors.NotTrustedError):
        return _error(403, e.message, e.field)
    if isinstance(e, InvalidArgumentError):
        return _error(400, e.message, e.field)
    if isinstance(e, errors.TaskNotFoundError):
        return _error(404, f"unknown task {e.args[0] if e.args else ''!s}", "task_id")
    if isinstance(e, errors.WorkflowNotFoundError):
        return _error(404, str(e), e.FIELD)
    if isinstance(e, errors.PermissionDeniedError):
        return _error(403, str(e))
    if isinstance(e, errors.BackendUnavailableError | errors.UnavailableError):
        return _error(503, str(e))
    if isinstance(e, errors.StorageFullError):
        return _error(507, str(e))
    if isinstance(e, errors.QueueFullError):
        return _error(429, str(e))
    raise e


def _count(raw: str | bytes) -> int | None:
    """A count written as plain ASCII digits (a query's limit, a Content-Length), None if it is
    not one or has over 18 digits (more than any limit; ``int()`` of thousands of digits is
    refused by Python, and would be a 500)."""
    if not raw or len(raw) > 18 or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


#: a declared body up to this size is drained after its 413 (the server's HTTP parser reads
#: and drops it, and the connection stays usable); a larger one closes the connection
DRAIN_MAX_BYTES = 64 * 1024 * 1024


def _too_large(size: int | None, limit: int, *, declared: bool = False) -> JSONResponse:
    """413. A ``declared`` Content-Length too large to drain (over :data:`DRAIN_MAX_BYTES`, or
    too long to read as a number) also closes the connection: what the client sends next on it
    would be taken for that body. (Closing on every 413 would lose the answer for a client
    still sending: the kernel resets a connection closed with unread data.)"""
    what = "request body" if size is None else f"request body is {size} bytes,"
    close = declared and (size is None or size > DRAIN_MAX_BYTES)
    return _error(
        413,
        f"{what} over the limit of {limit} bytes (gateway.max_request_bytes)",
        "body",
        {"Connection": "close"} if close else None,
    )


class GatewayMiddleware:
    """Before any route runs, in this order: the client's limits (429 with ``Retry-After``;
    the client is a valid token's identity, else the caller's host), the declared body size
    (413 when its Content-Length is over ``gateway.max_request_bytes``: a chunked body is
    capped as it is read, by the routes that read one) and auth (401 with
    ``WWW-Authenticate: Bearer``). A plain ASGI middleware, so a request is in flight until
    its response has been sent (and no per-request task and stream of Starlette's
    ``BaseHTTPMiddleware``)."""

    def __init__(
        self, app: ASGIApp, auth: Auth, limits: ClientLimiter | None, max_request_bytes: int
    ) -> None:
        self.app = app
        self.auth = auth
        self.limits = limits if limits is not None and limits.settings.enabled else None
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = None
        declared = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                authorization = v.decode("latin-1")
            elif k == b"content-length":
                declared = v
        client = ""
        if self.limits is not None:
            client = self.auth.identity(authorization) or (scope.get("client") or ("?",))[0]
            refused = self.limits.acquire(client)
            if refused is not None:
                headers = {"Retry-After": refused.retry_after_header}
                await _error(429, refused.message, "", headers)(scope, receive, send)
                return
        try:
            if declared is not None and declared.isdigit():
                size = _count(declared)
                if size is None or size > self.max_request_bytes:
                    await _too_large(size, self.max_request_bytes, declared=True)(
                        scope, receive, send
                    )
                    return
            denied = self.auth.check_http(authorization)
            if denied is not None:
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse({"error": denied}, 401, headers)(scope, receive, send)
                return
            await self.app(scope, receive, send)
        finally:
            if self.limits is not None:
                self.limits.release(client)


def _install_common(
    app: FastAPI, auth: Auth, limits: ClientLimiter | None, max_request_bytes: int
) -> None:
    async def handler(request: Request, e: Exception) -> JSONResponse:
        return error_response(e)

    async def route_error(request: Request, e: Exception) -> JSONResponse:
        """Starlette's own 404 (no such route) and 405 (the route takes another method), in
        the error shape every route answers with."""
        assert isinstance(e, StarletteHTTPException)
        field = {404: "path", 405: "method"}.get(e.status_code, "")
        where = f"{request.method} {request.url.path}"
        if len(where) > 200:
            where = where[:197] + "..."
        return _error(
            e.status_code, f"{e.detail}: {where} (routes: /openapi.json)", field, e.headers
        )

    app.add_exception_handler(StarletteHTTPException, route_error)
    # outermost (added last): limits, the body cap and auth come before every route
    app.add_middleware(
        GatewayMiddleware, auth=auth, limits=limits, max_request_bytes=max_request_bytes
    )

    for exc in (
        InvalidArgumentError,
        errors.TaskNotFoundError,
        errors.WorkflowNotFoundError,
        errors.BackendUnavailableError,
        errors.UnavailableError,
        errors.PermissionDeniedError,
        errors.StorageFullError,
        errors.QueueFullError,
    ):
        app.add_exception_handler(exc, handler)


#: body keys holding an optional string -> (spec key, value when null or empty)
_STRING_KEYS = {
    "id": ("task_id", None),
    "class": ("task_class", "cpu_short"),
    "workflow_id": ("workflow_id", ""),
}


def _new_app(
    control: ControlPlane,
    auth: Auth,
    metrics_actors: tuple[str, ...],
    title: str,
    description: str = "",
    *,
    limits: ClientLimiter | None,
    max_request_bytes: int,
) -> FastAPI:
    """An app with auth, per-client limits, the body cap, JSON error answers and ``/metrics``
    (the registries of ``metrics_actors``: the first one's required, the others' best effort).
    A path with a trailing slash is not redirected (404): a redirect would be built from the
    request's Host header."""
    app = FastAPI(title=title, description=description, version=__version__, redirect_slashes=False)
    _install_common(app, auth, limits, max_request_bytes)

    @app.get("/metrics", response_class=PlainTextResponse, responses=_responses({503: ACTOR_DOWN}))
    async def metrics() -> Response:
        text = await control.metrics_text(metrics_actors)
        return Response(text, media_type=PROMETHEUS_TEXT)

    return app


def _submit_spec(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgumentError("body", "must be a JSON object")
    spec: dict[str, Any] = {"payload": {}}
    # unknown keys are skipped: the original kept them in the envelope; they change nothing
    for key, value in body.items():
        if key in _STRING_KEYS:
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(key, "must be a string")
            name, empty = _STRING_KEYS[key]
            spec[name] = value or empty
        elif key == "payload":
            if value is not None and not isinstance(value, dict):
                raise InvalidArgumentError("payload", "must be a JSON object")
            spec["payload"] = value or {}
        elif key == "priority":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError("priority", "must be an integer")
            spec["priority"] = value
        elif key == "timeout_seconds" and value is not None:
            spec["timeout_s"] = _timeout_s(value)
    return spec


def _timeout_s(value: Any) -> float:
    """The body's ``timeout_seconds`` as the spec's ``timeout_s``, errors naming the body key.

    The checks are gRPC's (:func:`decode_timeout_seconds`: a real number, finite, not negative);
    0, which gRPC's field 6 must read as "not set", is refused here, where a JSON body leaves
    the key out (or sends null) for the class default.
    """
    try:
        timeout_s = decode_timeout_seconds(value)
    except (InvalidArgumentError, OverflowError):  # OverflowError: an int too large for a float
        timeout_s = None
    if timeout_s is None:
        shown = repr(value)
        raise InvalidArgumentError(
            "timeout_seconds",
            "must be a finite number of seconds > 0 (leave it out, or null, for the class "
            f"default); got {shown if len(shown) <= 40 else shown[:37] + '...'}",
        )
    return timeout_s


async def _read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The request body, or a 413 once it is over ``limit`` bytes while it streams in (reading
    stops there; a Content-Length over it was answered by :class:`GatewayMiddleware`)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _too_large(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request, limit: int) -> Any:
    """The request body as JSON (an empty body: ``{}``), or the 400/413 answer."""
    raw = await _read_body(request, limit)
    if isinstance(raw, JSONResponse):
        return raw
    try:
        return json_input.loads(raw) if raw else {}
    except ValueError as e:  # UnicodeDecodeError and too deep included
        return _error(400, f"invalid JSON: {e}", "body")


def orchestrator_app(
    control: ControlPlane,
    auth: Auth,
    *,
    max_request_bytes: int,
    limits: ClientLimiter | None = None,
) -> FastAPI:
    """Every route of reference/api.md's HTTP table, and the task and workflow routes. A body
    over ``max_request_bytes`` (``gateway.max_request_bytes``) is 413; ``limits``: the
    gateway's per-client limits (shared with its other servers)."""
    description = "Tasks, queue status and metrics of a rayinfra runtime."
    app = _new_app(
        control,
        auth,
        ORCHESTRATOR_METRICS,
        "rayinfra orchestrator API",
        description,
        limits=limits,
        max_request_bytes=max_request_bytes,
    )

    @app.get(
        "/health",
        responses=_health_responses(
            ORCHESTRATOR_HEALTH_SCHEMA,
            "tasks are accepted and run (an optional part may be degraded: see services)",
            "the scheduler or gateway is down, or a required service is not running",
        ),
    )
    async def health() -> JSONResponse:
        healthy, services = await control.health_report()
        return JSONResponse(
            {"status": "ok" if healthy else "unhealthy", "healthy": healthy, "services": services},
            status_code=200 if healthy else 503,
        )

    @app.post(
        "/queue/submit",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SUBMIT_SCHEMA}},
            }
        },
        responses=_responses(
            {
                400: "bad JSON or a bad field (named)",
                403: "the task runs code (payload type shell/python) and the caller is not "
                "trusted, or it is a shell task and its class does not allow them",
                409: "the id exists with a different spec",
                413: "the body is over gateway.max_request_bytes",
                503: f"the class needs a backend that is not available (gpu_slurm); {ACTOR_DOWN}",
                507: "the state store's disk is full (its directory named): nothing was queued",
            },
            _json("accepted (durable), or already there with the same spec", SUBMIT_REPLY_SCHEMA),
        ),
    )
    async def submit(request: Request) -> JSONResponse:
        body = await _json_body(request, max_request_bytes)
        if isinstance(body, JSONResponse):
            return body
        spec = _submit_spec(body)  # errors are answered by error_response (_install_common)
        trusted = auth.trusted(request.headers.get("authorization"))
        (res,) = await control.submit([spec], trusted, "http")
        if spec.get("task_class") != SLURM_CLASS:
            return JSONResponse({"ok": True, "id": res["task_id"]})
        # the original answered once sbatch had: wait a little for the job id
        job = await control.slurm_job(res["task_id"], SLURM_SUBMIT_WAIT_S)
        if job is None:  # still queued (the class's limit of jobs out at once)
            return JSONResponse({"ok": True, "id": res["task_id"], "status": "pending"})
        return JSONResponse(
            {"ok": True, "id": res["task_id"], "slurm_job_id": job["id"], "status": "submitted"}
        )

    @app.get("/queue/status", responses=_responses({503: ACTOR_DOWN}))
    async def queue_status() -> JSONResponse:
        m: dict[str, float] = await control.call("scheduler", "metrics_snapshot")
        st: dict[str, Any] = await control.call("scheduler", "status")
        counts = st.get("counts", {})
        return JSONResponse(
            {
                "pending": int(m.get("env_queue_depth", 0)),
                "running": int(counts.get("running", 0)),
                "done": int(counts.get("completed", 0)),
                "failed": int(counts.get("failed", 0)),
                "submitted": m.get("queue_tasks_submitted_total", 0.0),
                "processed": m.get("queue_tasks_processed_total", 0.0),
                "completed": m.get("queue_tasks_completed_total", 0.0),
                "queue_files_pending": int(m.get("queue_depth", 0)),
            }
        )

    @app.get(
        "/tasks",
        openapi_extra={"parameters": TASK_LIST_PARAMETERS},
        responses=_responses(
            {400: "a bad status, limit or cursor (named)", 503: ACTOR_DOWN},
            _json("a page of tasks, newest first", TASK_PAGE_SCHEMA),
        ),
    )
    async def list_tasks(request: Request) -> JSONResponse:
        q = request.query_params
        raw = q.get("limit", str(TASK_LIST_LIMIT_DEFAULT))
        limit = _count(raw)
        if limit is None or not 1 <= limit <= LIST_LIMIT_MAX:
            return _error(
                400, f"must be an integer in [1, {LIST_LIMIT_MAX}], got {raw!r:.80}", "limit"
            )
        page = await control.list_tasks(
            q.get("status") or None, q.get("class") or None, limit, q.get("after") or None
        )
        return JSONResponse({"items": [st.json_dict() for st in page.tasks], "next": page.next})

    @app.get("/tasks/{task_id}", responses=_responses({404: "unknown task", 503: ACTOR_DOWN}))
    async def task_status(task_id: str) -> JSONResponse:
        st = (await control.get([task_id])).get(task_id)
        if st is None:
            return _error(404, f"unknown task {task_id!r}", "task_id")
        return JSONResponse(st.json_dict())

    @app.get(
        "/slurm/status/{task_id}",
        responses=_responses({404: "no Slurm job for that task", 503: ACTOR_DOWN}),
    )
    async def slurm_status(task_id: str) -> JSONResponse:
        job = await control.slurm_job(task_id)
        if job is None:
            return _error(404, f"no Slurm job is tracked for task {task_id!r}", "task_id")
        return JSONResponse(job)

    async def json_body(request: Request) -> Any:
        return await _json_body(request, max_request_bytes)

    async def workflow_body(request: Request) -> dict[str, Any] | JSONResponse:
        body = await json_body(request)
        if isinstance(body, JSONResponse | dict):
            return body
        return _error(400, "must be a JSON object (a workflow)", "body")

    wf_errors = {400: "the spec is invalid (field: the path)", 503: ACTOR_DOWN}

    @app.get("/workflows", responses=_responses({503: ACTOR_DOWN}))
    async def list_workflows() -> JSONResponse:
        return JSONResponse({"items": await control.list_workflows()})

    @app.post(
        "/workflows",
        status_code=201,
        responses=_responses(
            {
                **wf_errors,
                403: "a step runs code and the caller is not trusted (or its class "
                "does not allow shell tasks)",
            },
            _json("the saved workflow", {"type": "object"}),
        ),
    )
    async def create_workflow(request: Request) -> JSONResponse:
        body = await workflow_body(request)
        if isinstance(body, JSONResponse):
            return body
        trusted = auth.trusted(request.headers.get("authorization"))
        saved = await control.create_workflow(body, str(body.get("id") or ""), trusted=trusted)
        return JSONResponse(saved, status_code=201)

    @app.get("/workflows/{workflow_id}", responses=_responses({404: "no such workflow"}))
    async def get_workflow(workflow_id: str) -> JSONResponse:
        return JSONResponse(await control.call("workflows", "get_workflow", workflow_id))

    @app.put(
        "/workflows/{workflow_id}",
        responses=_responses({**wf_errors, 403: "a step runs code", 404: "no such workflow"}),
    )
    async def put_workflow(workflow_id: str, request: Request) -> JSONResponse:
        body = await workflow_body(request)
        if isinstance(body, JSONResponse):
            return body
        trusted = auth.trusted(request.headers.get("authorization"))
        saved = await control.call("workflows", "update_workflow", workflow_id, body, trusted)
        return JSONResponse(saved)

    @app.get("/workflows/{workflow_id}/history", responses=_responses({404: "no such workflow"}))
    async def workflow_history(workflow_id: str) -> JSONResponse:
        items = await control.call("workflows", "workflow_history", workflow_id)
        return JSONResponse({"items": items})

    @app.post(
        "/workflows/{workflow_id}/runs",
        responses=_responses(
            {400: "a bad field (named)", 404: "no such workflow", 503: ACTOR_DOWN}
        ),
    )
    async def start_run(workflow_id: str, request: Request) -> JSONResponse:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not isinstance(body, dict):
            return _error(400, "must be a JSON object: {idempotency_key?, input?}", "body")
        key = body.get("idempotency_key") or ""
        if not isinstance(key, str):
            return _error(400, "must be a string", "idempotency_key")
        run_input = body.get("input") or {}
        if not isinstance(run_input, dict):
            return _error(400, "must be a JSON object", "input")
        return JSONResponse(await control.start_workflow_run(workflow_id, key, run_input))

    @app.get(
        "/workflows/{workflow_id}/runs",
        openapi_extra={
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": LIST_LIMIT_MAX,
                        "default": 50,
                    },
                }
            ]
        },
        responses=_responses({400: "a bad limit", 404: "no such workflow"}),
    )
    async def list_runs(workflow_id: str, request: Request) -> JSONResponse:
        raw = request.query_params.get("limit", "50")
        limit = _count(raw)
        if limit is None or not 1 <= limit <= LIST_LIMIT_MAX:
            return _error(
                400, f"must be an integer in [1, {LIST_LIMIT_MAX}], got {raw!r:.80}", "limit"
            )
        items = await control.list_workflow_runs(workflow_id, limit)
        return JSONResponse({"items": items})

    @app.get("/workflow-runs/{run_id}", responses=_responses({404: "no such run"}))
    async def get_run(run_id: str) -> JSONResponse:
        return JSONResponse(await control.get_workflow_run(run_id))

    @app.post("/workflow-runs/{run_id}/cancel", responses=_responses({404: "no such run"}))
    async def cancel_run(run_id: str) -> JSONResponse:
        return JSONResponse(await control.cancel_workflow_run(run_id))

    return app


def env_manager_app(
    control: ControlPlane,
    auth: Auth,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    limits: ClientLimiter | None = None,
) -> FastAPI:
    """The env-manager's :50101: ``/health`` and ``/metrics`` (Prometheus text)."""
    app = _new_app(
        control,
        auth,
        ("service_registry",),
        "rayinfra env-manager API",
        limits=limits,
        max_request_bytes=max_request_bytes,
    )

    @app.get(
        "/health",
        responses=_health_responses(
            ENV_MANAGER_HEALTH_SCHEMA,
            "the service registry answers",
            "the service registry does not answer",
        ),
    )
    async def health() -> JSONResponse:
        try:
            await control.call("service_registry", "ping", timeout_s=2.0)
            ok = True
        except errors.UnavailableError:
            ok = False
        return JSONResponse(
            {
                "status": "healthy" if ok else "unhealthy",
                "service": "env-manager",
                "timestamp": datetime.now(timezone.utc).isoformat(),
            },
            status_code=200 if ok else 503,
        )

    return app

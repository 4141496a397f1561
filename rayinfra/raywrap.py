"""The one wrapper around the Ray Python API (``ray.init``, actors, cluster state).

Local mode binds everything to 127.0.0.1, which only works if the process also has
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; Ray reads that (and its auth settings) once, when ``ray``
is imported. :func:`prepare_process` therefore sets the variables *and* refreshes Ray's cached
copies, so a caller that imported ``ray`` before rayinfra still connects. The private names it
touches are confined to that function and covered by ``tests/integration/test_connect.py``.

What crosses an actor boundary: Ray packs an argument or a reply with msgpack, which keeps
lists and dicts itself but hands each tuple inside them (and each object it does not know) to
pickle separately, through a Python hook: ~1 us per tuple to send and more to read back. A
tuple, or a class instance, at the top goes to pickle whole, in C: ~0.1-0.3 us per item. So
the hot paths send many small records as a tuple of tuples (dispatch batches, executors'
results) or inside an object (:class:`~rayinfra.models.StatusRows`), never as a list or dict
of tuples; a list or dict of str, numbers and dicts is fine (msgpack packs it natively).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rayinfra.config import NAMESPACE
from rayinfra.connection import ConnectionInfo
from rayinfra.errors import UnavailableError

HEAD_RESOURCE = "node:__internal_head__"


class RayUnavailableError(RuntimeError):
    """The Ray cluster recorded in connection.json cannot be reached."""


def prepare_process(info: ConnectionInfo) -> None:
    """Make this process's Ray settings match the runtime described by ``info``."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0" if info.loopback else "1"
    os.environ["RAY_AUTH_MODE"] = info.auth_mode
    if info.auth_mode == "token" and info.token_path:
        os.environ["RAY_AUTH_TOKEN_PATH"] = info.token_path
        os.environ.pop("RAY_AUTH_TOKEN", None)
    import ray._private.ray_constants as ray_constants  # import reads the env we just set

    # Refresh what an earlier `import ray` cached (no-ops when ray was imported just now).
    ray_constants.ENABLE_RAY_CLUSTER = not info.loopback
    from ray._raylet import (  # type: ignore[attr-defined]
        AuthenticationTokenLoader,
        Config,
    )

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def import_ray() -> None:
    """Import Ray (~0.4 s here) without connecting: what a caller about to wait on something
    else (a head starting) can do meanwhile; :func:`prepare_process` refreshes what the import
    read from the environment."""
    import ray  # noqa: F401


def connected_address() -> str | None:
    import ray

    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    return str(ctx.gcs_address)


def connect(info: ConnectionInfo, *, namespace: str = NAMESPACE) -> None:
    """Connect this process as a Ray driver to the recorded runtime (idempotent).

    Never uses ``address="auto"``: the address comes from ``connection.json``.
    """
    current = connected_address() if "ray" in sys.modules else None
    if current is not None:
        if current == info.gcs_address:
            return
        raise RayUnavailableError(
            f"this process is already connected to Ray at {current}, not {info.gcs_address}"
        )
    prepare_process(info)
    import ray

    try:
        ray.init(
            address=info.gcs_address,
            namespace=namespace,
            log_to_driver=False,
            logging_level="WARNING",
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError) as e:
        raise RayUnavailableError(f"cannot connect to Ray at {info.gcs_address}: {e}") from e


def current_node_id() -> str | None:
    """The id of the Ray node this process runs on, or ``None`` outside Ray."""
    if "ray" not in sys.modules:
        return None
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None


def current_actor_id() -> str | None:
    """The id of the actor this process runs, or ``None`` outside one (or outside Ray).

    Ray keeps an actor's id when it restarts the actor; a newly created actor gets a new one.
    """
    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    actor_id = ray.get_runtime_context().get_actor_id()
    return str(actor_id) if actor_id else None


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def in_actor() -> bool:
    """Whether this process runs a Ray actor (in its ``__init__`` or a method), not a driver,
    a test or a process outside Ray (never starts Ray to find out)."""
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def actor_id(handle: Any) -> str:
    """The id of the actor behind ``handle`` (a restarted actor keeps its id; a new actor of the
    same name has another)."""
    return str(handle._actor_id.hex())


def get_actor(name: str, namespace: str = NAMESPACE) -> Any | None:
    """The named actor's handle, or ``None`` if it does not exist."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def control_actor_options(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """Ray options every control actor is created with (DESIGN.md "Contracts")."""
    return {
        "name": name,
        "namespace": namespace,
        "num_cpus": 0,
        "resources": {HEAD_RESOURCE: 0.001},
        "lifetime": "detached",
        "max_restarts": -1,
        "get_if_exists": True,
    }


def create_control_actor(
    cls: type, name: str, args: Sequence[Any], namespace: str = NAMESPACE
) -> Any:
    """Create (or fetch, if it exists) a named, detached, head-pinned control actor."""
    import ray

    return ray.remote(cls).options(**control_actor_options(name, namespace)).remote(*args)


def call_each(handles: Mapping[str, Any], method: str, timeout_s: float) -> dict[str, Any]:
    """Call ``method()`` on each handle at once; map name -> result or the exception raised."""
    import ray

    refs = {name: getattr(h, method).remote() for name, h in handles.items()}
    out: dict[str, Any] = {}
    for name, ref in refs.items():
        try:
            out[name] = ray.get(ref, timeout=timeout_s)
        except Exception as e:  # noqa: BLE001 - reported per actor
            out[name] = e
    return out


def invoke(handle: Any, method: str, *args: Any, timeout_s: float | None = None) -> Any:
    """Call one actor method and wait for its result (Ray's wrapper errors unwrapped)."""
    import ray

    try:
        return ray.get(getattr(handle, method).remote(*args), timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - re-raised as what the actor raised
        raise unwrap_task_error(e) from None


async def acall(handle: Any, method: str, *args: Any, timeout_s: float | None = None) -> Any:
    """Await one actor method on a handle (Ray's wrapper errors unwrapped; a dead or unreachable
    actor raises one of :func:`actor_errors`, a timeout ``asyncio.TimeoutError``)."""
    passed_on: tuple[type[BaseException], ...] = (*actor_errors(), asyncio.TimeoutError)
    ref = getattr(handle, method).remote(*args)
    try:
        return await (ref if timeout_s is None else asyncio.wait_for(ref, timeout_s))
    except passed_on:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised as what the actor raised
        raise unwrap_task_error(e) from None


class ActorCaller:
    """The one way rayinfra calls a named control actor: handles looked up (off the event loop)
    and cached, looked up again after a failure; an actor that is missing, dead or restarting
    is retried with exponential back-off for ``retry_for_s`` and then raises
    :class:`~rayinfra.errors.UnavailableError`; what the actor itself raised comes back as itself."""

    def __init__(
        self, *, retry_for_s: float = 0.0, backoff_s: float = 1.0, namespace: str = NAMESPACE
    ) -> None:
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self.namespace = namespace
        self._handles: dict[str, Any] = {}

    async def handle(self, actor: str) -> Any:
        h = self._handles.get(actor)
        if h is None:
            h = await asyncio.to_thread(get_actor, actor, self.namespace)  # a GCS lookup blocks
            if h is None:
                raise _MissingError(f"the {actor} actor is not running")
            self._handles[actor] = h
        return h

    async def ping_each(
        self, names: Sequence[str], timeout_s: float
    ) -> dict[str, dict[str, Any] | BaseException | None]:
        """``ping()`` every named actor at once: its answer, the error it gave (a timeout, or a
        dead or restarting actor, is :class:`~rayinfra.errors.UnavailableError`), or ``None``
        when no actor of that name exists. Handles are the cached ones: when one fails, a
        lookup tells an actor that is gone (``None``) or restarting (the error) from one that
        was replaced by a new actor of that name (which is pinged)."""

        async def one(name: str) -> dict[str, Any] | BaseException | None:
            before = self._handles.get(name)
            try:
                answer: dict[str, Any] = await self._once(name, "ping", (), timeout_s)
                return answer
            except _MissingError:
                return None
            except _GoneError as e:
                failed = UnavailableError(str(e))
            except Exception as e:  # noqa: BLE001 - reported per actor
                return e
            try:  # the handle failed: is that actor gone, restarting, or replaced?
                now = await self.handle(name)
                if before is None or actor_id(now) == actor_id(before):
                    return failed  # the same actor: dead or restarting
                answer = await self._once(name, "ping", (), timeout_s)
                return answer
            except _MissingError:
                return None
            except _GoneError as e:
                return UnavailableError(str(e))
            except Exception as e:  # noqa: BLE001 - reported per actor
                return e

        answers = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, answers, strict=True))

    async def call(
        self,
        actor: str,
        method: str,
        *args: Any,
        timeout_s: float | None = None,
        retry_for_s: float | None = None,
    ) -> Any:
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_delay,
            wait_exponential,
        )

        window = self.retry_for_s if retry_for_s is None else retry_for_s
        try:
            if window <= 0:  # one try (the gateway's calls): no retry machinery per call
                return await self._once(actor, method, args, timeout_s)
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(window),
                wait=wait_exponential(multiplier=0.05, max=self.backoff_s),
                retry=retry_if_exception_type(_GoneError),
                reraise=True,
            ):
                with attempt:
                    return await self._once(actor, method, args, timeout_s)
        except _GoneError as e:
            raise UnavailableError(str(e)) from None
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True above

    async def _once(
        self, actor: str, method: str, args: tuple[Any, ...], timeout_s: float | None
    ) -> Any:
        h = await self.handle(actor)
        try:
            return await acall(h, method, *args, timeout_s=timeout_s)
        except actor_errors() as e:
            self._handles.pop(actor, None)
            raise _GoneError(f"the {actor} actor is unavailable ({type(e).__name__})") from None
        except asyncio.TimeoutError:
            raise UnavailableError(
                f"the {actor} actor did not answer within {timeout_s:g}s"
            ) from None


class _GoneError(Exception):
    """An actor that is missing or died: worth a retry (it may be restarting)."""


class _MissingError(_GoneError):
    """No actor of that name exists (a lookup found none)."""


def actor_log(
    gcs_address: str, name: str, *, stream: str = "err", tail: int = -1, follow: bool = False
) -> Iterator[str]:
    """Lines of a named actor's worker log (``err``: Python logging; ``out``: prints) from
    Ray's session logs, through Ray's state API. Raises ``LookupError`` for an unknown actor."""
    from ray.util.state import get_log

    handle = get_actor(name)
    if handle is None:
        raise LookupError(f"no actor named {name!r} in namespace {NAMESPACE}")
    actor_id = handle._actor_id.hex()
    partial_line = ""
    for chunk in get_log(
        address=gcs_address, actor_id=actor_id, tail=tail, follow=follow, suffix=stream
    ):
        text = partial_line + chunk
        *lines, partial_line = text.split("\n")
        yield from lines
    if partial_line:
        yield partial_line


def kill_actor(handle: Any) -> None:
    """Kill an actor for good (no restart); a detached actor's name is released."""
    import ray

    ray.kill(handle, no_restart=True)


def cluster_summary() -> dict[str, Any]:
    """Alive nodes (id, address, labels but Ray's own, resources but ``node:*``), total and
    available resources of the connected cluster."""
    import ray

    def mine(d: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {k: v for k, v in d.items() if not k.startswith(prefix)}

    nodes = [
        {
            **n,
            "alive": True,
            "labels": mine(n["labels"], "ray.io/"),
            "resources": mine(n["resources"], "node:"),
        }
        for n in node_views()
    ]
    return {
        "nodes": nodes,
        "resources_total": mine(ray.cluster_resources(), "node:"),
        "resources_available": mine(ray.available_resources(), "node:"),
    }


def create_actor(cls: type, options: dict[str, Any], args: Sequence[Any]) -> Any:
    """Create an actor of ``cls`` with explicit Ray ``options``."""
    import ray

    return ray.remote(cls).options(**options).remote(*args)


def node_views() -> list[dict[str, Any]]:
    """Alive nodes with their total resources and labels (a GCS call: run it off the loop)."""
    import ray

    return [
        {
            "node_id": n["NodeID"],
            "address": n["NodeManagerAddress"],
            "resources": dict(n.get("Resources", {})),
            "labels": dict(n.get("Labels", {})),
        }
        for n in ray.nodes()
        if n["Alive"]
    ]


def actor_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "that actor is gone or unreachable" (the caller may recreate/retry)."""
    import ray.exceptions as rex

    return (rex.RayActorError, rex.ActorUnavailableError, rex.ActorDiedError)


def upload_runtime_env(runtime_env: dict[str, Any]) -> dict[str, Any]:
    """Turn local ``py_modules`` / ``working_dir`` paths into ``gcs://`` package URIs.

    Ray accepts local paths only in ``ray.init(runtime_env=...)``; an actor (the scheduler)
    creating executors must upload them itself. Private API, confined to this wrapper.
    """
    if not runtime_env or ("py_modules" not in runtime_env and "working_dir" not in runtime_env):
        return dict(runtime_env)
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    env = upload_py_modules_if_needed(dict(runtime_env), include_gitignore=True)
    return dict(upload_working_dir_if_needed(env, include_gitignore=True))


class RayMetricsMirror:
    """Mirror a ``name{k="v"} -> value`` snapshot into ``ray.util.metrics`` gauges, so the
    Ray dashboard (and its Prometheus endpoint) shows rayinfra's metrics too."""

    def __init__(self) -> None:
        self._gauges: dict[tuple[str, tuple[str, ...]], Any] = {}

    def publish(self, snapshot: Mapping[str, float]) -> None:
        from ray.util.metrics import Gauge

        for key, value in snapshot.items():
            name, _, rest = key.partition("{")
            tags = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
            tags = {k: v.strip('"') for k, v in tags.items()}
            ident = (name, tuple(sorted(tags)))
            gauge = self._gauges.get(ident)
            if gauge is None:
                gauge = Gauge(f"rayinfra_{name}", description=name, tag_keys=ident[1])
                self._gauges[ident] = gauge
            gauge.set(value, tags=tags or None)


def available_resources() -> dict[str, float]:
    """What Ray reports free right now, cluster-wide (a GCS call: run it off the loop)."""
    import ray

    return {k: float(v) for k, v in ray.available_resources().items()}


def submit_function(fn: Any, args: Sequence[Any], runtime_env: dict[str, Any]) -> Any:
    """Run ``fn(*args)`` as a Ray task in ``runtime_env`` (no CPU reserved: the calling executor
    already holds its class's resources); returns the ObjectRef."""
    import ray

    return ray.remote(fn).options(num_cpus=0, max_retries=0, runtime_env=runtime_env).remote(*args)


def cancel(ref: Any, force: bool = False) -> None:
    import ray

    ray.cancel(ref, force=force)


def unwrap_task_error(e: BaseException) -> BaseException:
    """The exception a Ray task raised, if ``e`` wraps one."""
    import ray.exceptions as rex

    cause = getattr(e, "cause", None) if isinstance(e, rex.RayTaskError) else None
    return cause if isinstance(cause, BaseException) else e

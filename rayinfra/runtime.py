"""Start, connect to, inspect and stop a rayinfra runtime (Ray head + control actors).

``start`` is idempotent: with a live runtime recorded in ``<state dir>/connection.json`` it
connects, creates any control actor that is missing, and reports what already ran. ``stop`` removes
the control actors and stops the head only if rayinfra launched it (by its pid).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rayinfra import hardware, head, raywrap, runtime_health
from rayinfra._deprecation import renamed
from rayinfra.config import CONTROL_ACTOR_NAMES, RayinfraConfig, config_to_dict, save_effective
from rayinfra.connection import (
    ConnectionInfo,
    pid_alive,
    read_connection,
    recorded,
    remove_connection,
    write_connection,
)
from rayinfra.errors import InvalidArgumentError
from rayinfra.private_files import ensure_private_dir

log = logging.getLogger(__name__)
ACTOR_READY_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 5.0


class RuntimeFailureError(RuntimeError):
    """The runtime could not be started, reached or stopped (CLI exit code 1)."""


class NoGpuError(RuntimeFailureError):
    """``--gpu`` was given but no GPU was found; the message carries the probe report."""


@dataclass
class StartReport:
    info: ConnectionInfo
    already_running: bool
    launched_head: bool
    actors: dict[str, str] = field(default_factory=dict)  # name -> "created" | "running"
    hardware: hardware.HardwareInfo | None = None


@dataclass
class StopReport:
    was_running: bool
    actors_removed: list[str] = field(default_factory=list)
    actor_errors: dict[str, str] = field(default_factory=dict)
    head_stopped: bool = False
    leftover_pids: list[int] = field(default_factory=list)


def connect(state_dir: Path) -> ConnectionInfo:
    """Connect this process to the runtime recorded under ``state_dir``."""
    info = recorded(state_dir)
    if info is None:
        raise RuntimeFailureError(f"no rayinfra runtime is running for state dir {state_dir}")
    return _connected(info)


def _connected(info: ConnectionInfo) -> ConnectionInfo:
    """Connect this process to ``info``'s cluster; ``info`` as connected."""
    try:
        raywrap.connect(info)
    except raywrap.RayUnavailableError as e:
        raise RuntimeFailureError(str(e)) from e
    # record where "auto" led (the cluster on this node): a later client must reach that
    # cluster, not whichever one "auto" finds then
    actual = raywrap.connected_address()
    return replace(info, gcs_address=actual) if actual else info


def attach(config: RayinfraConfig, address: str) -> ConnectionInfo:
    """Connect this process to the Ray cluster at ``address`` (cluster mode, never loopback)."""
    host = address.rpartition(":")[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeFailureError(
            f"cannot join {address} in cluster mode: Ray replaces {host} with this machine's "
            "address (so the connection would hang); give the head's own address, another "
            "loopback address (127.0.0.2, ...) or 'auto' on a node of that cluster"
        )
    if config.ray.auth_mode == "token" and not config.ray_token_path.is_file():
        raise RuntimeFailureError(
            f"no Ray auth token for {address}: {config.ray_token_path} does not exist; give the "
            "cluster's token (--token-file, $RAY_AUTH_TOKEN_PATH or ray.token_path), or, for a "
            'cluster without auth, RAY_AUTH_MODE=disabled or ray.auth_mode = "disabled"'
        )
    info = ConnectionInfo(
        gcs_address=address,
        mode="cluster",
        loopback=False,
        auth_mode=config.ray.auth_mode,
        token_path=str(config.ray_token_path) if config.ray.auth_mode == "token" else None,
        state_dir=str(config.state.dir),
    )
    return _connected(info)


def ensure_actors(
    config: RayinfraConfig, timeout_s: float = ACTOR_READY_TIMEOUT_S
) -> dict[str, str]:
    """Create every missing control actor and wait until all answer ``ping``."""
    from rayinfra.actors import control_actor_classes

    cfg = config_to_dict(config)
    outcome: dict[str, str] = {}
    handles: dict[str, Any] = {}
    for name, cls in control_actor_classes().items():
        outcome[name] = "running" if raywrap.get_actor(name) is not None else "created"
        handles[name] = raywrap.create_control_actor(cls, name, [cfg])
    deadline = time.monotonic() + timeout_s
    pending = dict(handles)
    errors: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        results = raywrap.call_each(
            pending, "ping", timeout_s=max(1.0, deadline - time.monotonic())
        )
        errors = {n: r for n, r in results.items() if isinstance(r, Exception)}
        pending = {n: pending[n] for n in errors}
        if pending:
            time.sleep(0.5)
    if pending:
        detail = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in errors.items())
        raise RuntimeFailureError(f"control actors not ready after {timeout_s:.0f}s: {detail}")
    return outcome


def start(
    config: RayinfraConfig,
    *,
    address: str | None = None,
    require_gpu: bool = False,
) -> StartReport:
    """Bring the runtime up (or report the one already up). Raises RuntimeFailureError / PortBusyError."""
    try:
        state_dir = ensure_private_dir(config.state.dir)  # 0700, tightened if it was looser
    except OSError as e:  # another user's directory, a file, no permission
        raise RuntimeFailureError(f"state dir: {e}") from e
    existing = recorded(state_dir)
    if existing is not None:
        info = connect(state_dir)
        actors = ensure_actors(config)
        resume(state_dir)  # a stop that drained it and then failed: it dispatches again
        return StartReport(info, already_running=True, launched_head=False, actors=actors)

    hw = hardware.detect()
    if require_gpu and not hw.gpus:
        raise NoGpuError("--gpu was given but no GPU was found:\n" + hardware.format_report(hw))
    save_effective(config)

    if address or config.ray.address:
        target = address or config.ray.address
        assert target is not None
        info = attach(config, target)
        write_connection(info)
        return StartReport(info, False, False, ensure_actors(config), hw)

    imports = _import_ahead()
    launched = head.launch_head(config, hw)
    info = launched.info
    write_connection(info)
    try:
        imports.join()
        raywrap.connect(info)
        actors = ensure_actors(config)
    except BaseException:
        # never leave a half-started runtime behind
        head.stop_head(launched.process.pid, timeout_s=config.ray.stop_timeout_s, force=True)
        remove_connection(state_dir)
        raise
    return StartReport(info, already_running=False, launched_head=True, actors=actors, hardware=hw)


def _import_ahead() -> threading.Thread:
    """Import what connecting and creating the control actors takes (Ray, the actor classes
    and their servers: ~0.8 s of CPU here) on a thread of its own while the head starts (a
    wait of seconds); whoever joins it then imports nothing. Any failure is left to the import
    proper, which raises it where it is handled."""

    def work() -> None:
        try:
            raywrap.import_ray()
            from rayinfra.actors import control_actor_classes

            control_actor_classes()
        except Exception:  # raised again by the import that needs it
            log.debug("importing ahead failed", exc_info=True)

    thread = threading.Thread(target=work, name="rayinfra-import-ahead", daemon=True)
    thread.start()
    return thread


def remove_actors(timeout_s: float = PING_TIMEOUT_S) -> tuple[list[str], dict[str, str]]:
    """Close and kill every control actor (in reverse start order)."""
    removed: list[str] = []
    errors: dict[str, str] = {}
    for name in reversed(CONTROL_ACTOR_NAMES):
        handle = raywrap.get_actor(name)
        if handle is None:
            continue
        result = raywrap.call_each({name: handle}, "shutdown", timeout_s=timeout_s)[name]
        if isinstance(result, Exception):
            errors[name] = f"shutdown: {type(result).__name__}: {result}"
        try:
            raywrap.kill_actor(handle)
            removed.append(name)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            errors[name] = f"kill: {type(e).__name__}: {e}"
    return removed, errors


def drain(state_dir: Path, *, timeout_s: float) -> dict[str, int]:
    """Before a stop: the scheduler dispatches nothing more, gives running tasks ``timeout_s``
    to end, and requeues what still runs as pending (durable: it runs on the next start).
    ``{"running": at the start, "requeued": left}``; an unreachable runtime or scheduler
    raises :class:`RuntimeFailureError` (``stop --force`` skips the drain)."""
    try:
        connect(state_dir)
        handle = raywrap.get_actor("scheduler")
        if handle is None:
            raise RuntimeFailureError("the scheduler actor is not running")
        result: dict[str, int] = raywrap.invoke(
            handle, "drain", timeout_s, timeout_s=timeout_s + 60
        )
        return result
    except RuntimeFailureError:
        raise
    except Exception as e:
        raise RuntimeFailureError(
            f"could not drain the scheduler ({type(e).__name__}: {e}); use --force to stop anyway"
        ) from e


def resume(state_dir: Path) -> int:
    """Undo :func:`drain` when the stop that followed it failed: the scheduler dispatches
    again, the attempts it handed back queued first; how many (0 when nothing was drained).
    Best effort: an unreachable scheduler resumes nothing (it is not draining when it
    restarts)."""
    try:
        connect(state_dir)
        handle = raywrap.get_actor("scheduler")
        return 0 if handle is None else int(raywrap.invoke(handle, "resume", timeout_s=30))
    except Exception as e:  # noqa: BLE001 - the caller reports its own failure
        log.warning("could not resume the scheduler after a drain: %s", e)
        return 0


def stop_services(state_dir: Path, *, timeout_s: float = 10.0) -> dict[str, str]:
    """Stop every service the registry runs (dependants first): ``name -> result``.

    An unreachable runtime or registry stops nothing and says so under ``"*"``.
    """
    try:
        connect(state_dir)
        handle = raywrap.get_actor("service_registry")
        if handle is None:
            return {}
        result: dict[str, str] = raywrap.invoke(
            handle, "stop", [], timeout_s, timeout_s=timeout_s * 20 + 30
        )
        return result
    except Exception as e:  # noqa: BLE001 - reported; stopping the runtime goes on
        return {"*": f"services not stopped: {type(e).__name__}: {e}"}


def stop(state_dir: Path, *, timeout_s: float = 30.0, force: bool = False) -> StopReport:
    """Remove the control actors; stop the head only if rayinfra launched it."""
    info = read_connection(state_dir)
    if info is None:
        return StopReport(was_running=False)
    report = StopReport(was_running=True)
    head_alive = info.launched_by_rayinfra and pid_alive(info.head_pid)
    if head_alive or not info.launched_by_rayinfra:
        try:
            raywrap.connect(info)
            report.actors_removed, report.actor_errors = remove_actors()
        except raywrap.RayUnavailableError as e:
            if not force:
                raise RuntimeFailureError(f"{e}; use --force to stop the head anyway") from e
            report.actor_errors["*"] = str(e)
        finally:
            raywrap.disconnect()
    if info.launched_by_rayinfra and info.head_pid:
        report.leftover_pids = head.stop_head(info.head_pid, timeout_s=timeout_s, force=force)
        report.head_stopped = not report.leftover_pids
        if report.leftover_pids:
            raise RuntimeFailureError(
                f"head (pid {info.head_pid}) still has processes after {timeout_s:.0f}s: "
                f"{head.describe_pids(report.leftover_pids)}; rerun with --force"
            )
    remove_connection(state_dir)
    return report


def status(config: RayinfraConfig, services: Sequence[str] = ()) -> dict[str, Any]:
    """The runtime's state, seen as a Ray driver: :func:`not_running_status` or, connected to
    the recorded runtime, :func:`live_status`. (The CLI asks the gateway for the latter.)"""
    info = recorded(config.state.dir)
    if info is None:
        return not_running_status(config)
    try:
        raywrap.connect(info)
    except raywrap.RayUnavailableError as e:
        st = asyncio.run(live_status(config, info, services, connected=False))
        st["ray"].update(running=False, error=str(e))
        return st
    return asyncio.run(live_status(config, info, services))


def class_table(config: RayinfraConfig) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "num_cpus": c.num_cpus,
            "num_gpus": c.num_gpus,
            "label_selector": c.node_selector,
            "timeout_s": c.timeout_s,
            "limit": [c.min_limit, c.max_limit],
        }
        for name, c in config.classes.items()
    }


NOT_RUNNING_HEALTH = {"healthy": False, "summary": "not running", "failing": [], "degraded": []}


def not_running_status(config: RayinfraConfig) -> dict[str, Any]:
    return {
        "running": False,
        "health": NOT_RUNNING_HEALTH,
        "ray": {"running": False, "state_dir": str(config.state.dir)},
        "actors": {},
        "classes": class_table(config),
        "gateway": {},
        "services": {},
        "dashboard_url": None,
    }


async def live_status(
    config: RayinfraConfig,
    info: ConnectionInfo,
    services: Sequence[str] = (),
    *,
    caller: raywrap.ActorCaller | None = None,
    connected: bool = True,
) -> dict[str, Any]:
    """Keys ``running``, ``health`` (what the Health RPC answers: ``healthy``, a ``summary``,
    ``failing`` and ``degraded`` components), ``ray`` (nodes, resources), ``actors`` (state, pid, restarts),
    ``classes`` (with ``live`` queue state), ``gateway`` (each server and its address),
    ``services`` (the registry's rows), ``dashboard_url``. Needs this process connected to the
    runtime's Ray (a driver, or an actor of it such as the gateway); ``caller``: whose cached
    actor handles to use (the gateway's own; default a new one). The cluster's GCS tables are
    read on a thread meanwhile, and the pings go out at once."""
    classes = class_table(config)
    ray_info: dict[str, Any] = {"running": connected, **info.to_dict()}
    actors: dict[str, Any] = {}
    gateway: dict[str, str] = {}
    rows: dict[str, Any] = {}
    if connected:
        caller = caller or raywrap.ActorCaller()
        cluster = asyncio.ensure_future(asyncio.to_thread(raywrap.cluster_summary))
        t0 = time.perf_counter()
        try:
            pings = await caller.ping_each(CONTROL_ACTOR_NAMES, PING_TIMEOUT_S)
            ray_info["ping_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        finally:
            ray_info.update(await cluster)
        for name, answer in pings.items():
            if answer is None:
                actors[name] = {"state": "missing"}
            elif isinstance(answer, BaseException):
                actors[name] = {"state": "unresponsive", "error": str(answer)}
            else:
                servers = answer.pop("servers", None)
                gateway.update(servers or {})
                actors[name] = {"state": "alive", **answer}
        live: dict[str, Any] | None
        found: dict[str, Any] | None
        live, found = await asyncio.gather(
            _ask(caller, "scheduler", actors, "status"),
            _ask(caller, "service_registry", actors, "status", list(services)),
        )
        for name, live_state in (live or {}).get("classes", {}).items():
            if name in classes:  # pending, inflight, current adaptive limit, executors
                classes[name]["live"] = live_state
        rows = found or {}
    healthy = connected and all(a.get("state") == "alive" for a in actors.values())
    registry = actors.get("service_registry", {})
    registry_alive = registry.get("state") == "alive"
    health = runtime_health.assess(
        {name: _actor_health(a) for name, a in actors.items()},
        rows if registry_alive else None,
        registry_error=registry.get("error", "") if registry_alive else "",
    )
    return {
        "running": healthy,
        # what the Health RPC answers: healthy while tasks are accepted and run, and what is
        # degraded (an optional service down, an auxiliary actor not answering)
        "health": health.to_dict() if connected else NOT_RUNNING_HEALTH,
        "ray": ray_info,
        "actors": actors,
        "classes": classes,
        "gateway": gateway,
        "services": rows,
        "dashboard_url": info.dashboard_url,
    }


def _actor_health(entry: Mapping[str, Any]) -> str:
    """An ``actors`` entry of :func:`live_status` as the Health map words it."""
    if entry.get("state") == "alive":
        return runtime_health.HEALTHY
    if entry.get("state") == "missing":
        return "unavailable: not running"
    return f"unavailable: {entry.get('error', entry.get('state'))}"


async def _ask(
    caller: raywrap.ActorCaller, actor: str, actors: dict[str, Any], method: str, *args: Any
) -> Any:
    """``actor.method(*args)`` if that actor answered its ping, else ``None`` (a failure is
    noted on the actor's entry; a bad argument, such as an unknown service, is raised)."""
    if actors.get(actor, {}).get("state") != "alive":
        return None
    try:
        return await caller.call(actor, method, *args, timeout_s=PING_TIMEOUT_S, retry_for_s=0)
    except InvalidArgumentError:
        raise
    except Exception as e:  # noqa: BLE001 - reported beside the actor's state
        actors[actor]["error"] = f"{method}: {type(e).__name__}: {e}"
        return None


__getattr__ = renamed(__name__, {"RuntimeFailure": "RuntimeFailureError", "NoGpu": "NoGpuError"})

"""The ``service_registry`` control actor: a thin shell around :class:`ServiceManager`.

It builds the catalog and the drivers from the effective config, adopts what runs on (re)start,
and exposes the long-poll interface of DESIGN.md "Contracts": ``start(names, parallel,
overrides) -> op_id``, ``op_updates(op_id, after_seq, timeout_s)``, ``stop``, ``restart``,
``status(names)``, ``health_updates(after_seq, ...)``, ``open_logs/read_logs/close_logs``, and
``prune`` for the ``orphaned`` services (instances of services the config no longer has).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayinfra.actors.base import ControlActor
from rayinfra.errors import InvalidArgumentError
from rayinfra.services.catalog import build_catalog, cluster_name
from rayinfra.services.drivers.base import Driver, DriverError, LogLine
from rayinfra.services.drivers.docker import DockerDriver
from rayinfra.services.drivers.process import ProcessDriver
from rayinfra.services.manager import ServiceManager
from rayinfra.services.metrics import ServiceMetrics
from rayinfra.services.spec import SpecError
from rayinfra.store import ChangeFeed

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 2.0
LOG_STREAM_IDLE_S = 120.0
LOG_BATCH = 500
HEALTH_STREAM = "health_checker"
#: the health checker's view -> GetServicesStatus status
HEALTH_TO_STATUS = {
    "starting": "starting",
    "healthy": "running",
    "unhealthy": "unhealthy",
    "exited": "failed",
    "restarting": "starting",
    "failed": "failed",
}


class LogStreamNotFoundError(KeyError):
    pass


@dataclass
class _LogStream:
    """Lines read by a thread from a driver's log iterator, handed out in batches."""

    service: str
    instance_id: str
    lines: list[LogLine] = field(default_factory=list)
    done: bool = False
    error: str = ""
    last_read: float = field(default_factory=time.monotonic)
    cond: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)

    def pump(self, it: Iterator[LogLine]) -> None:
        try:
            for line in it:
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
                if self.stop.is_set():
                    break
        except Exception as e:  # noqa: BLE001 - reported to the reader
            self.error = str(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def take(self, timeout_s: float) -> tuple[list[LogLine], bool]:
        self.last_read = time.monotonic()
        with self.cond:
            self.cond.wait_for(lambda: bool(self.lines) or self.done, timeout=timeout_s)
            out, self.lines = self.lines[:LOG_BATCH], self.lines[LOG_BATCH:]
            return out, self.done and not self.lines


class ServiceRegistryActor(ControlActor):
    NAME = "service_registry"
    metrics: ServiceMetrics

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        svc = cfg.services
        self.cluster = cluster_name(svc, cfg.state.dir)
        self.catalog_error = ""
        try:
            catalog = build_catalog(svc, cfg.state.dir)
        except SpecError as e:  # keep answering: every request reports the broken catalog
            self.catalog_error = str(e)
            catalog = {}
        drivers: dict[str, Driver] = {
            "docker": DockerDriver(svc.docker_host, default_network=svc.docker_network),
            "process": ProcessDriver(Path(cfg.state.dir) / "services"),
        }
        self.manager = ServiceManager(
            catalog,
            drivers,
            self.store,
            self.cluster,
            max_parallel=svc.max_concurrent_starts,
            health_timeout_s=svc.health_timeout_s,
            stop_timeout_s=svc.stop_timeout_s,
            start_attempts=svc.start_attempts,
            retry_initial_s=svc.start_retry_initial_s,
            retry_max_s=svc.start_retry_max_s,
            max_queued_pulls=svc.max_queued_pulls,
        )
        self.metrics = self.manager.metrics
        self._logs: dict[str, _LogStream] = {}
        self._health_feed = ChangeFeed(self.store, HEALTH_STREAM, reader=True)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_task(self.manager.recover())
        self._loops = [
            loop.create_task(self._refresh_loop()),
            loop.create_task(self.publishing_metrics()),
        ]

    async def _wait_ready(self) -> None:
        if self.catalog_error:
            raise InvalidArgumentError(
                "services", f"the service catalog is invalid: {self.catalog_error}"
            )
        with contextlib.suppress(Exception):
            await asyncio.shield(self._ready)

    async def _refresh_loop(self) -> None:
        with contextlib.suppress(Exception):
            await self._ready
        await self.every(REFRESH_INTERVAL_S, self._refresh, "service refresh")

    async def _refresh(self) -> None:
        self._reap_logs()
        await self.manager.refresh()

    # ------------------------------------------------------------------ operations
    async def recovered(self) -> dict[str, str]:
        """What the last recovery adopted or removed (``name -> outcome``)."""
        await self._wait_ready()
        return dict(self._ready.result()) if not self._ready.exception() else {}

    async def catalog(self) -> dict[str, dict[str, Any]]:
        """The catalog's specs as tables."""
        await self._wait_ready()
        return {n: s.model_dump(mode="json") for n, s in self.manager.catalog.items()}

    async def start(
        self,
        names: list[str] | None = None,
        parallel: bool = True,
        overrides: dict[str, str] | None = None,
    ) -> str:
        await self._wait_ready()
        return await self.manager.start(names or [], parallel, overrides or {})

    async def pull(self, images: list[str] | None = None) -> str:
        """Begin pulling images (empty = the catalog's docker images): an op id."""
        await self._wait_ready()
        return await self.manager.pull(images or [])

    async def op_updates(
        self, op_id: str, after_seq: int = 0, timeout_s: float = 30.0
    ) -> tuple[int, list[dict[str, Any]], bool]:
        return await self.manager.op_updates(op_id, after_seq, timeout_s)

    async def stop(
        self, names: list[str] | None = None, timeout_s: float | None = None
    ) -> dict[str, str]:
        await self._wait_ready()
        return await self.manager.stop(names or [], timeout_s)

    async def restart(self, name: str, timeout_s: float | None = None) -> tuple[bool, str]:
        await self._wait_ready()
        return await self.manager.restart(name, timeout_s)

    async def prune(self, timeout_s: float | None = None) -> dict[str, str]:
        """Stop, remove and forget the orphaned services: ``name -> "stopped" | "not running" |
        "error: ..."`` (one that failed to stop stays orphaned)."""
        await self._wait_ready()
        return await self.manager.prune(timeout_s)

    async def restart_unhealthy(self, name: str, reason: str) -> tuple[bool, str]:
        """Called by the health checker: restart a service that is still wanted running."""
        await self._wait_ready()
        st = self.manager.services.get(name)
        if st is None or not st.desired:
            return False, f"{name} is not wanted running"
        self.metrics.restarts.labels(name, reason).inc()
        return await self.manager.restart(name, reason=reason)

    async def status(self, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        await self._wait_ready()
        out = self.manager.status(names or [])
        health = await asyncio.to_thread(self.store.kv_items, "health")
        for name, row in out.items():
            h = health.get(name)
            if h is not None and h.get("instance_id") == row["container_id"]:
                row["health"] = h
                if row["status"] == "running":  # the checker saw it more recently
                    row["status"] = HEALTH_TO_STATUS.get(h.get("status", ""), "running")
                    row["message"] = h.get("message", row["message"])
        return out

    async def watch_list(self) -> dict[str, dict[str, Any]]:
        """Services wanted running with their instance and spec: the health checker's input."""
        await self._wait_ready()
        out = {}
        for name, st in self.manager.services.items():
            if st.desired and st.instance is not None and st.status != "starting":
                out[name] = {
                    "spec": st.spec.model_dump(mode="json"),
                    "instance_id": st.instance.id,
                    "status": st.status,
                }
        return out

    async def health_updates(
        self, after_seq: int = 0, names: list[str] | None = None, timeout_s: float = 30.0
    ) -> tuple[int, list[dict[str, Any]]]:
        """Probe results published by the health checker (its change feed), by sequence."""
        seq, items = await self._health_feed.wait(
            after_seq, keys=names or None, timeout_s=timeout_s
        )
        return seq, [{"seq": c.seq, "service": c.key, **c.data} for c in items if c.kind == "probe"]

    # ------------------------------------------------------------------ logs
    async def open_logs(
        self, name: str, follow: bool = False, tail: int | None = None, since: float | None = None
    ) -> str:
        """Start reading a service's log; returns a stream id for :meth:`read_logs`."""
        await self._wait_ready()
        if not name:
            raise InvalidArgumentError("service_name", "is required")
        self.manager.known("service_name", [name])
        st = self.manager.services[name]
        if st.instance is None:
            raise LogStreamNotFoundError(f"service {name} has no instance (never started here)")
        drv = self.manager.driver(st.spec)
        try:
            it = await asyncio.to_thread(
                drv.logs, st.instance.id, follow=follow, tail=tail, since=since
            )
        except DriverError as e:
            raise LogStreamNotFoundError(f"logs of {name}: {e}") from None
        stream = _LogStream(name, st.instance.id)
        sid = uuid.uuid4().hex
        self._logs[sid] = stream
        threading.Thread(target=stream.pump, args=(it,), daemon=True, name=f"logs-{name}").start()
        return sid

    async def read_logs(
        self, stream_id: str, timeout_s: float = 10.0
    ) -> tuple[list[dict[str, Any]], bool]:
        """Next lines of a log stream (``(lines, done)``); each line keeps its own timestamp."""
        stream = self._logs.get(stream_id)
        if stream is None:
            raise LogStreamNotFoundError(stream_id)
        lines, done = await asyncio.to_thread(stream.take, timeout_s)
        if done:
            self._logs.pop(stream_id, None)
            if stream.error:
                raise DriverError(f"logs of {stream.service}: {stream.error}")
        return [
            {
                "service_name": stream.service,
                "container_id": stream.instance_id,
                "stream": ln.stream,
                "message": ln.message,
                "timestamp": ln.timestamp,
            }
            for ln in lines
        ], done

    async def close_logs(self, stream_id: str) -> bool:
        stream = self._logs.pop(stream_id, None)
        if stream is not None:
            stream.stop.set()
        return stream is not None

    async def log_streams(self) -> int:
        """Open log streams (for leak tests)."""
        return len(self._logs)

    def _reap_logs(self) -> None:
        cutoff = time.monotonic() - LOG_STREAM_IDLE_S
        for sid, stream in list(self._logs.items()):
            if stream.last_read < cutoff:
                stream.stop.set()
                self._logs.pop(sid, None)

"""The ``health_checker`` control actor: a thin shell around :class:`HealthMonitor`.

It follows the registry's watch list, probes, keeps CPU samples, publishes every probe result
on its change feed (StreamHealth), writes status changes to the events table and the latest
view per service to the ``health`` kv namespace, and restarts unhealthy or exited services
through the registry (the one owner of instances).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rayinfra import raywrap
from rayinfra.actors.base import ControlActor
from rayinfra.services.drivers.base import Driver
from rayinfra.services.drivers.docker import DockerDriver
from rayinfra.services.drivers.process import ProcessDriver
from rayinfra.services.monitor import HealthMonitor
from rayinfra.store import EventRecord

REGISTRY = "service_registry"


class HealthCheckerActor(ControlActor):
    NAME = "health_checker"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        drivers: dict[str, Driver] = {
            "docker": DockerDriver(
                cfg.services.docker_host, default_network=cfg.services.docker_network
            ),
            "process": ProcessDriver(Path(cfg.state.dir) / "services"),
        }
        self._registry: Any = None
        self.monitor = HealthMonitor(
            drivers, self._watch, self._restart, self.feed.publish, self._event, self._save
        )
        self._loop_task = asyncio.get_running_loop().create_task(self.monitor.run())

    def _handle(self) -> Any:
        if self._registry is None:
            self._registry = raywrap.get_actor(REGISTRY)
        return self._registry

    async def _watch(self) -> dict[str, dict[str, Any]]:
        h = self._registry or await asyncio.to_thread(self._handle)  # a GCS lookup blocks
        if h is None:
            return {}
        try:
            result: dict[str, dict[str, Any]] = await h.watch_list.remote()
        except Exception:  # registry restarting: look it up again next tick
            self._registry = None
            raise
        return result

    async def _restart(self, name: str, reason: str) -> tuple[bool, str]:
        h = self._registry or await asyncio.to_thread(self._handle)
        if h is None:
            return False, "service registry not running"
        result: tuple[bool, str] = await h.restart_unhealthy.remote(name, reason)
        return result

    async def _event(self, kind: str, name: str, data: dict[str, Any]) -> None:
        rec = EventRecord(0, kind, name, {"service": name, **data}, int(time.time()))
        await asyncio.wrap_future(self.store.append_events([rec]))

    async def _save(self, name: str, view: dict[str, Any]) -> None:
        await asyncio.wrap_future(self.store.kv_put("health", name, view))

    async def watched(self) -> dict[str, dict[str, Any]]:
        """What it monitors right now (name -> latest view)."""
        return {n: w.view() for n, w in self.monitor.watched.items()}

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
from rayinfra.errors import UnavailableError
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
        self._registry = raywrap.ActorCaller()
        self.monitor = HealthMonitor(
            drivers, self._watch, self._restart, self.feed.publish, self._event, self._save
        )
        self._loop_task = asyncio.get_running_loop().create_task(self.monitor.run())

    async def _watch(self) -> dict[str, dict[str, Any]]:
        """The registry's watch list (nothing while no registry runs)."""
        try:
            result: dict[str, dict[str, Any]] = await self._registry.call(REGISTRY, "watch_list")
        except UnavailableError:
            return {}
        return result

    async def _restart(self, name: str, reason: str) -> tuple[bool, str]:
        try:
            result: tuple[bool, str] = await self._registry.call(
                REGISTRY, "restart_unhealthy", name, reason
            )
        except UnavailableError as e:
            return False, f"service registry not running ({e})"
        return result

    async def _event(self, kind: str, name: str, data: dict[str, Any]) -> None:
        rec = EventRecord(0, kind, name, {"service": name, **data}, int(time.time()))
        await asyncio.wrap_future(self.store.append_events([rec]))

    async def _save(self, name: str, view: dict[str, Any]) -> None:
        await asyncio.wrap_future(self.store.kv_put("health", name, view))

    async def watched(self) -> dict[str, dict[str, Any]]:
        """What it monitors right now (name -> latest view)."""
        return {n: w.view() for n, w in self.monitor.watched.items()}

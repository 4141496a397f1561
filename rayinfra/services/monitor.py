"""Continuous health monitoring and restart-on-unhealthy (plain asyncio, no Ray import).

The ``health_checker`` actor runs one :class:`HealthMonitor`. Every tick it asks for the
services wanted running (``watch``), probes each when its interval is due, turns results into
a status with :class:`~rayinfra.services.probes.HealthTracker`, samples resource usage (CPU%
needs two samples, so it keeps the last two), and publishes:

- every probe result (``publish``: the change feed StreamHealth follows),
- status transitions as events (``service_healthy``, ``service_unhealthy``, ``service_failed``),
- the latest view per service (``save``: the ``health`` kv namespace the registry reads).

It owns restart-on-unhealthy and restart-on-exit (Docker's restart policy is never used):
capped, jittered exponential backoff from :class:`~rayinfra.services.probes.RestartBudget`;
once a service used its attempts within the window it is ``failed`` until restarted by hand
(a new instance id that the monitor did not cause resets its budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rayinfra.services import probes
from rayinfra.services.drivers.base import Driver, DriverError, Usage, cpu_percent
from rayinfra.services.spec import ServiceSpec

log = logging.getLogger(__name__)

TICK_S = 0.25
USAGE_INTERVAL_S = 2.0
#: a new instance's second usage sample follows its first this soon (CPU% needs two), so its
#: resource usage shows within a second of its start instead of after a whole interval
FIRST_USAGE_GAP_S = 0.5

WatchFn = Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]]
RestartFn = Callable[[str, str], Awaitable[tuple[bool, str]]]
PublishFn = Callable[[list[tuple[str, str, dict[str, Any]]]], Awaitable[Any]]
EventFn = Callable[[str, str, dict[str, Any]], Awaitable[Any]]
SaveFn = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass
class _Watched:
    spec: ServiceSpec
    instance_id: str
    tracker: probes.HealthTracker | None
    budget: probes.RestartBudget
    next_probe: float = 0.0
    next_usage: float = 0.0
    usage: list[Usage] = field(default_factory=list)
    status: str = "starting"  # starting / healthy / unhealthy / exited / restarting / failed
    message: str = ""
    restart_task: asyncio.Task[None] | None = None
    expected_instance: bool = False  # the next instance change is our own restart

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "message": self.message,
            "instance_id": self.instance_id,
            "restarts_in_window": self.budget.recent(),
            "checked_at": time.time(),
        }
        if self.tracker is not None and self.tracker.last_result is not None:
            r = self.tracker.last_result
            out["probe"] = {
                "kind": self.spec.health.kind if self.spec.health else "",
                "healthy": r.healthy,
                "message": r.message,
                "latency_s": r.latency_s,
            }
        if len(self.usage) == 2:
            a, b = self.usage
            out["resource_usage"] = {
                "cpu_percent": round(cpu_percent(a, b), 2),
                "memory_bytes": b.memory_bytes,
                "network_rx_bytes": b.rx_bytes,
                "network_tx_bytes": b.tx_bytes,
                "network_scope": b.network_scope,
            }
        return out


def probe_exec(spec: ServiceSpec, drv: Driver, instance_id: str) -> probes.ExecFn:
    """Where a probe's command runs: in the container when it asks to and is a Docker one,
    else on the host."""
    check = spec.health
    if check is not None and check.in_container and spec.driver == "docker":
        return partial(drv.exec, instance_id)
    return probes.host_exec


class HealthMonitor:
    def __init__(
        self,
        drivers: Mapping[str, Driver],
        watch: WatchFn,
        restart: RestartFn,
        publish: PublishFn,
        event: EventFn,
        save: SaveFn,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.drivers = dict(drivers)
        self._watch = watch
        self._restart = restart
        self._publish = publish
        self._event = event
        self._save = save
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.watched: dict[str, _Watched] = {}
        self._probing: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # keep monitoring, say why
                log.exception("health monitor tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        wanted = await self._watch()
        now = self._clock()
        for name in [n for n in self.watched if n not in wanted]:
            if self.watched[name].restart_task is None:  # mid-restart it is briefly unwanted
                del self.watched[name]
        for name, row in wanted.items():
            spec = ServiceSpec.model_validate(row["spec"])
            iid = str(row["instance_id"])
            known = self.watched.get(name)
            if known is None or known.spec != spec:
                w = _Watched(
                    spec,
                    iid,
                    probes.HealthTracker(spec.health, self._clock) if spec.health else None,
                    probes.RestartBudget(spec.restart, self._clock, self._rng),
                )
                self.watched[name] = w
            elif (w := known).instance_id != iid:  # a new instance: fresh start period
                if not w.expected_instance:
                    w.budget.reset()  # restarted by hand: the budget starts over
                w.expected_instance = False
                w.instance_id = iid
                w.usage.clear()
                if w.tracker is not None:
                    w.tracker.reset()
                w.status = "starting"
            if w.restart_task is not None or w.status == "failed" or name in self._probing:
                continue
            if now >= w.next_probe:
                w.next_probe = now + (spec.health.interval_s if spec.health else 1.0)
                self._probing.add(name)
                self._keep(asyncio.ensure_future(self._check(name, w)))

    async def _check(self, name: str, w: _Watched) -> None:
        try:
            await self._check_once(name, w)
        finally:
            self._probing.discard(name)

    async def _check_once(self, name: str, w: _Watched) -> None:
        drv = self.drivers[w.spec.driver]
        try:
            inst = await asyncio.to_thread(drv.inspect, w.instance_id)
        except DriverError as e:
            w.message = f"cannot inspect: {e}"
            await self._save(name, w.view())
            return
        if inst.state != "running":
            w.status = "exited"
            w.message = f"{inst.state} (exit code {inst.exit_code})"
            await self._event("service_exited", name, {"message": w.message})
            await self._save(name, w.view())
            if w.spec.restart.on_failure:
                self._schedule_restart(name, w, "exited")
            return
        now = self._clock()
        if now >= w.next_usage:
            w.next_usage = now + USAGE_INTERVAL_S
            with contextlib.suppress(DriverError):
                sample = await asyncio.to_thread(drv.usage, w.instance_id)
                if not w.usage:  # a new instance: its second sample right away
                    await asyncio.sleep(FIRST_USAGE_GAP_S)
                    w.usage = [sample]
                    sample = await asyncio.to_thread(drv.usage, w.instance_id)
                w.usage = [*w.usage[-1:], sample]
        if w.tracker is None or w.spec.health is None:
            w.status, w.message = "healthy", "running (no health check)"
            await self._save(name, w.view())
            return
        check = w.spec.health
        exec_fn = probe_exec(w.spec, drv, w.instance_id)
        res = await probes.run_probe(check, exec_fn=exec_fn, container_health=inst.health)
        status = w.tracker.observe(res)
        w.status, w.message = status, res.message
        probe = {
            "healthy": res.healthy,
            "message": res.message,
            "timestamp": int(time.time()),
            "details": {
                **res.details,
                "kind": check.kind,
                "status": status,
                "latency_ms": f"{res.latency_s * 1000:.1f}",
            },
        }
        await self._publish([(name, "probe", probe)])
        if w.tracker.changed:
            await self._event(f"service_{status}", name, {"message": res.message})
        await self._save(name, w.view())
        if status == "unhealthy" and w.spec.restart.on_unhealthy:
            self._schedule_restart(name, w, "unhealthy")

    def _schedule_restart(self, name: str, w: _Watched, reason: str) -> None:
        delay = w.budget.next_delay()
        if delay is None:
            w.status = "failed"
            w.message = (
                f"{reason}; restart budget used up ({w.spec.restart.max_attempts} restarts "
                f"within {w.spec.restart.window_s:g}s): failed until restarted by hand"
            )
            self._keep(asyncio.ensure_future(self._failed(name, w)))
            return
        w.status = "restarting"
        w.restart_task = asyncio.ensure_future(
            self._restart_after(name, w, reason, delay, self._clock())
        )

    async def _failed(self, name: str, w: _Watched) -> None:
        await self._event("service_failed", name, {"message": w.message})
        await self._save(name, w.view())

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart_after(
        self, name: str, w: _Watched, reason: str, delay: float, scheduled: float
    ) -> None:
        """Restart ``name`` ``delay`` seconds after ``scheduled`` (this monitor's clock). The
        wait is an event first, ``service_restart_scheduled``: the reason, the delay, which
        restart of the window's budget this is and when it was scheduled (unix seconds)."""
        try:
            await self._event(
                "service_restart_scheduled",
                name,
                {
                    "reason": reason,
                    "delay_s": round(delay, 4),
                    "restart": w.budget.recent(),
                    "of": w.spec.restart.max_attempts,
                    "scheduled_at": time.time() - (self._clock() - scheduled),
                },
            )
            await self._save(name, {**w.view(), "restart_in_s": round(delay, 2)})
            await asyncio.sleep(max(0.0, delay - (self._clock() - scheduled)))
            w.expected_instance = True
            ok, message = await self._restart(name, reason)
            if not ok:  # a successful restart is recorded by the registry (service_restarted)
                await self._event(
                    "service_restart_failed",
                    name,
                    {"reason": reason, "message": message, "delay_s": round(delay, 2)},
                )
            w.message = message
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the next tick tries again
            w.message = f"restart failed: {e}"
        finally:
            w.restart_task = None
            w.next_probe = 0.0

"""The service manager: desired vs actual state, start/stop/restart operations, adoption.

Plain asyncio, no Ray import: the ``service_registry`` actor is a thin shell around one
:class:`ServiceManager`. Driver calls (Docker SDK, process supervisor) block, so they run in
worker threads; the event loop never waits on them.

Durable state (the ``services`` namespace of the state store's kv table): for each service
the manager started, its effective spec (after per-call overrides), whether it is wanted
running, and its instance id. A restarted manager lists what carries its cluster label,
adopts what it still wants (same spec fingerprint) and removes the rest, except instances of
services its catalog no longer has: those are kept as ``orphaned`` until
:meth:`ServiceManager.prune` (or a stop naming them) stops and forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from rayinfra.errors import InvalidArgumentError, QueueFullError
from rayinfra.services import probes
from rayinfra.services.drivers.base import Driver, DriverError, DriverUnavailableError, Instance
from rayinfra.services.graph import Phase, StartPlan, closure, stop_order
from rayinfra.services.metrics import ServiceMetrics
from rayinfra.services.monitor import probe_exec
from rayinfra.services.spec import (
    LABEL_CLUSTER,
    LABEL_SERVICE,
    LABEL_SPEC,
    ServiceSpec,
    SpecError,
    apply_overrides,
    parse_spec,
    spec_table,
)
from rayinfra.store import EventRecord, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")

KV_NAMESPACE = "services"
#: statuses reported by status() (GetServicesStatus)
STATUSES = ("running", "starting", "unhealthy", "stopped", "failed", "orphaned")
OP_RETENTION_S = 600.0
#: While a start waits for health, the pause between probes is this fraction of the time
#: waited so far, at least HEALTH_POLL_MIN_S and at most min(check interval, HEALTH_POLL_MAX_S):
#: readiness is noticed within ~2% of the time it took (>= 0.02 s), so each dependency level
#: adds little to a start (a probe of a port costs ~0.2 ms: 50 a second are ~1% of a core),
#: while a slow service is probed ~35 times per doubling of its waited time. (A doubling
#: back-off, 0.1 s up to the interval, could notice a service ready at 1.6 s only at 3.1 s,
#: and added that lag at every level of the dependency graph.) Probes that run a process
#: (``command``: an exec in the container or on the host) and ``container`` checks (an engine
#: call) pause at least HEALTH_POLL_EXEC_MIN_S and ENGINE_POLL_FRACTION of the time waited:
#: they cost far more than a connection to a port. A job's exit is not polled: the driver
#: waits for it (Docker's wait), EXIT_WAIT_S at a time on a driver thread.
HEALTH_POLL_MIN_S = 0.02
HEALTH_POLL_EXEC_MIN_S = 0.1
HEALTH_POLL_MAX_S = 2.0
HEALTH_POLL_FRACTION = 0.02
EXIT_WAIT_S = 5.0
ENGINE_POLL_FRACTION = 0.05
#: While a start waits, a failing probe is followed by a look at the instance (did it exit?) at
#: most this often: at 20 probes a second, an engine call after each would load the engine
#: that is starting the next containers.
EXIT_CHECK_EVERY_S = 0.5
#: threads for blocking driver calls (creates, starts, inspects): their own, so a burst of
#: container starts never queues behind, or holds up, the event loop's default executor
DRIVER_THREADS = 32
#: image pulls that run at once (threads of their own): a flood of PullImages requests, whose
#: pulls go on after their callers left, queues here instead of filling the default executor
#: that the registry's state writes and status reads run on (it held every health check up)
PULL_THREADS = 2
#: a driver that started an instance less than this long ago is not checked before a start
CHECK_FRESH_S = 5.0
#: Instance starts (create + start) that run at once: as many as the engine has cores to run
#: them. More at once all finish late together (five container starts on two cores take
#: ~0.4 s each instead of ~0.15 s); fewer, in priority order (services with the longest chain
#: of dependants first), and the ones others wait for are up first. A start still holding its
#: slot after START_SLOT_HOLD_S (pulling an image, a slow engine) lets the next one go too.
START_SLOTS = max(2, os.cpu_count() or 2)
START_SLOT_HOLD_S = 0.5
#: Creating what waits (:meth:`ServiceManager._prepare`) waits at most this long for the first
#: wave's starts: a first-wave start pulling an image must not hold up the rest.
PREPARE_AFTER_S = 0.5


class UnknownOperationError(KeyError):
    pass


@dataclass
class ServiceState:
    """What the manager knows about one service right now."""

    name: str
    spec: ServiceSpec
    status: str = "stopped"  # one of STATUSES
    message: str = ""
    desired: bool = False  # wanted running
    instance: Instance | None = None
    started_at: float | None = None
    #: its last start (or the recovery) could not reach its driver's backend (an engine that
    #: was restarting): :meth:`ServiceManager.refresh` starts it once the backend answers
    backend_down: bool = False

    def as_dict(self) -> dict[str, Any]:
        inst = self.instance
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "driver": self.spec.driver,
            "container_id": inst.id if inst else "",
            "ports": list(self.spec.host_ports()),
            "started_at": int(self.started_at or 0),
            "desired": self.desired,
            "required": self.spec.required,
        }


@dataclass
class Operation:
    """One StartServices call: its updates in order, and whether it has ended."""

    id: str
    names: list[str]
    updates: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    success: bool = False
    finished_at: float | None = None
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    #: set when a service of this operation changed phase: the start loop looks again at what
    #: may start (a ``started`` condition is met mid-turn, not only when a turn ends)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: service -> how many services wait on it, at most, one behind another (its start goes
    #: first when starts queue for a slot)
    priority: dict[str, int] = field(default_factory=dict)
    #: service -> its instance being prepared (created) while what it waits on starts
    prepared: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: the services of the first wave whose create + start has not returned yet: preparing
    #: the others waits for them (at most PREPARE_AFTER_S), so the start slots go to the
    #: services everything else waits on before they go to creating what waits
    first_wave: set[str] = field(default_factory=set)
    first_wave_issued: asyncio.Event = field(default_factory=asyncio.Event)

    def issued(self, name: str) -> None:
        """``name``'s create + start returned (or failed): see :attr:`first_wave`."""
        self.first_wave.discard(name)
        if not self.first_wave:
            self.first_wave_issued.set()

    async def emit(self, update: dict[str, Any]) -> None:
        async with self.cond:
            update["seq"] = len(self.updates) + 1
            self.updates.append(update)
            self.cond.notify_all()

    async def finish(self, success: bool) -> None:
        async with self.cond:
            self.done, self.success, self.finished_at = True, success, time.time()
            self.cond.notify_all()


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DriverError) and not isinstance(exc, DriverUnavailableError)


class ServiceManager:
    """Owns every service instance of one cluster name; see the module doc."""

    def __init__(
        self,
        catalog: Mapping[str, ServiceSpec],
        drivers: Mapping[str, Driver],
        store: StateStore,
        cluster: str,
        *,
        max_parallel: int = 5,
        health_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        start_attempts: int = 3,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        max_queued_pulls: int = 64,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.catalog = dict(catalog)
        self.drivers = dict(drivers)
        self.store = store
        self.cluster = cluster
        self.max_parallel = max_parallel
        self.health_timeout_s = health_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.start_attempts = start_attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_queued_pulls = max_queued_pulls
        self.metrics = metrics or ServiceMetrics()
        self.services: dict[str, ServiceState] = {
            n: ServiceState(n, s) for n, s in self.catalog.items()
        }
        self.ops: dict[str, Operation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._op_ids = itertools.count(1)
        self._pool: ThreadPoolExecutor | None = None  # made on first use, again after close()
        self._pulls: ThreadPoolExecutor | None = None  # likewise, for image pulls
        self._pulls_open = 0  # images of pulls accepted and not ended (queued or running)
        self._started_ok: dict[str, float] = {}  # driver kind -> when it last started something
        self._start_slots = PrioritySlots(START_SLOTS)

    # ------------------------------------------------------------------ helpers
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def labels(self, spec: ServiceSpec) -> dict[str, str]:
        return {
            LABEL_SERVICE: spec.name,
            LABEL_CLUSTER: self.cluster,
            LABEL_SPEC: spec.fingerprint(),
        }

    def driver(self, spec: ServiceSpec) -> Driver:
        return self.drivers[spec.driver]

    async def _call(self, op: str, fn: Callable[[], T]) -> T:
        """Run a blocking driver call in a thread, timing it."""
        t0 = time.perf_counter()
        status = "success"
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(DRIVER_THREADS, thread_name_prefix="svc-driver")
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except BaseException:
            status = "error"
            raise
        finally:
            self.metrics.driver_duration.labels(op, status).observe(time.perf_counter() - t0)

    async def _inspect(self, spec: ServiceSpec, instance_id: str) -> Instance:
        return await self._call("inspect", partial(self.driver(spec).inspect, instance_id))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _event(self, kind: str, name: str, **data: Any) -> None:
        rec = EventRecord(0, kind, name, {"service": name, **data}, int(time.time()))
        await asyncio.wrap_future(self.store.append_events([rec]))

    def _persist(self, st: ServiceState) -> None:
        self.store.kv_put(
            KV_NAMESPACE,
            st.name,
            {
                "desired": st.desired,
                "spec": spec_table(st.spec),
                "instance_id": st.instance.id if st.instance else "",
            },
        )

    def _refresh_active(self) -> None:
        self.metrics.active.set(sum(1 for s in self.services.values() if s.status == "running"))

    # ------------------------------------------------------------------ recovery
    async def recover(self) -> dict[str, str]:
        """Adopt owned instances this manager still wants; remove the others, but keep those of
        services the catalog no longer has as ``orphaned`` (never restarted, never stopped by a
        stop of everything: they may hold someone's data).

        Returns ``name -> "adopted" | "removed" | "missing" | "orphaned"`` for what it found or
        expected.
        """
        outcome: dict[str, str] = {}
        saved = await asyncio.to_thread(self.store.kv_items, KV_NAMESPACE)
        former: dict[str, ServiceSpec] = {}  # saved specs of services no longer in the catalog
        for name, rec in saved.items():
            try:
                spec = parse_spec(name, rec["spec"])
            except (SpecError, KeyError, TypeError):
                log.warning("dropping unreadable saved state of service %s", name)
                continue
            if name not in self.catalog:
                former[name] = spec
                continue
            st = self.services[name]
            st.spec, st.desired = spec, bool(rec.get("desired"))
        for kind, drv in self.drivers.items():
            try:
                await self._call("check", drv.check)
                owned = await self._call(
                    "list", partial(drv.list_owned, {LABEL_CLUSTER: self.cluster})
                )
            except DriverError as e:
                for st in self.services.values():
                    if st.desired and st.spec.driver == kind:
                        st.status, st.message = "failed", str(e)
                        st.backend_down = isinstance(e, DriverUnavailableError)
                continue
            for inst in owned:
                name = inst.labels.get(LABEL_SERVICE, "")
                owner = self.services.get(name)
                if name and owner is None:
                    self.services[name] = _orphan(name, kind, former.get(name), inst)
                    outcome[name] = "orphaned"
                    await self._event("service_orphaned", name, instance_id=inst.id)
                elif (
                    owner is not None
                    and owner.desired
                    and owner.spec.driver == kind
                    and inst.labels.get(LABEL_SPEC) == owner.spec.fingerprint()
                    and (owner.instance is None or owner.instance.id == inst.id)
                ):
                    owner.instance = inst
                    owner.started_at = inst.started_at
                    if inst.state == "running":
                        owner.status, owner.message = "running", "adopted"
                    else:
                        owner.status = "failed"
                        owner.message = f"adopted, but {inst.state} (exit code {inst.exit_code})"
                    outcome[name] = "adopted"
                    await self._event("service_adopted", name, instance_id=inst.id)
                else:
                    with contextlib.suppress(DriverError):
                        await self._call("remove", partial(drv.remove, inst.id))
                    outcome[name or inst.id] = "removed"
                    await self._event("service_orphan_removed", name, instance_id=inst.id)
        for st in self.services.values():
            if st.desired and st.instance is None and st.name not in outcome:
                st.status, st.message = "failed", "wanted running, but no instance was found"
                outcome[st.name] = "missing"
        self._refresh_active()
        return outcome

    # ------------------------------------------------------------------ start
    def resolve(
        self, names: Iterable[str], overrides: Mapping[str, str] | None = None
    ) -> tuple[dict[str, ServiceSpec], list[str]]:
        """Specs with overrides applied and the start order (dependencies pulled in)."""
        try:
            specs = apply_overrides(self.catalog, overrides or {})
            order = closure(specs, list(names) or list(specs))
        except SpecError as e:
            raise InvalidArgumentError(e.field, e.message) from None
        return specs, order

    async def start(
        self,
        names: Iterable[str] = (),
        parallel: bool = True,
        overrides: Mapping[str, str] | None = None,
    ) -> str:
        """Begin starting ``names`` (empty = the whole catalog) and their dependencies.

        Returns an operation id; follow it with :meth:`op_updates`. Bad names/overrides raise
        :class:`InvalidArgumentError` before anything starts.
        """
        specs, order = self.resolve(names, overrides)
        return self._new_op("op", order, partial(self._run_start, specs=specs, parallel=parallel))

    async def start_and_wait(
        self,
        names: Iterable[str] = (),
        parallel: bool = True,
        overrides: Mapping[str, str] | None = None,
    ) -> Operation:
        op_id = await self.start(names, parallel, overrides)
        op = self.ops[op_id]
        async with op.cond:
            await op.cond.wait_for(lambda: op.done)
        return op

    async def op_updates(
        self, op_id: str, after_seq: int = 0, timeout_s: float = 30.0
    ) -> tuple[int, list[dict[str, Any]], bool]:
        """Long-poll an operation: ``(seq, updates after after_seq, done)``."""
        op = self.ops.get(op_id)
        if op is None:
            raise UnknownOperationError(op_id)
        async with op.cond:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    op.cond.wait_for(lambda: len(op.updates) > after_seq or op.done),
                    timeout_s,
                )
            new = op.updates[after_seq:]
            return len(op.updates), new, op.done and len(op.updates) == after_seq + len(new)

    def _new_op(
        self, kind: str, names: list[str], run: Callable[[Operation, list[str]], Awaitable[None]]
    ) -> str:
        """Register an operation (forgetting those that ended over ``OP_RETENTION_S`` ago), run
        it in the background and return its id."""
        cutoff = time.time() - OP_RETENTION_S
        for op_id in [i for i, o in self.ops.items() if o.finished_at and o.finished_at < cutoff]:
            del self.ops[op_id]
        op = Operation(id=f"{kind}-{next(self._op_ids)}-{uuid.uuid4().hex[:8]}", names=names)
        self.ops[op.id] = op
        self._spawn(run(op, names))
        return op.id

    async def _run_start(
        self, op: Operation, order: list[str], specs: dict[str, ServiceSpec], parallel: bool
    ) -> None:
        plan = StartPlan(specs, order, parallel=self.max_parallel if parallel else 1)
        op.priority = chain_heights(specs, order)
        try:
            for n in order:
                await op.emit(_update(n, "starting", f"Preparing to start {n}", 0))
            running: dict[str, asyncio.Task[None]] = {}
            first = True
            while True:
                op.changed.clear()  # a change from here on wakes the wait below
                # those with the longest chains waiting on them queue first for a start slot
                for n in sorted(plan.startable(), key=lambda n: -op.priority[n]):
                    running[n] = self._spawn(self._start_one(op, plan, specs[n]))
                if first:  # what waits for others is created meanwhile
                    first = False
                    op.first_wave = set(running)
                    if not running:
                        op.first_wave_issued.set()
                    op.prepared = {
                        n: self._spawn(self._prepare(op, specs[n]))
                        for n in order
                        if plan.phase(n) == "waiting"
                    }
                if plan.finished() or not running:  # not running: all that is left is blocked
                    break
                changed = asyncio.ensure_future(op.changed.wait())
                try:
                    done, _ = await asyncio.wait(
                        [*running.values(), changed], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    changed.cancel()
                for n in [n for n, t in running.items() if t in done]:
                    running.pop(n)
            # turns that ended still write their events: the operation ends after them
            await asyncio.gather(*running.values(), return_exceptions=True)
            await self._discard_prepared(op, specs)
            ok = True
            for n in order:
                phase, reason = plan.phase(n), plan.reason(n)
                spec = specs[n]
                if phase == "blocked":  # never ran: its final update is sent now
                    st = self.services[n]
                    if st.status != "running":
                        st.status, st.message = "stopped", f"blocked: {reason}"
                    self.metrics.failed_starts.labels(n, "blocked").inc()
                    await op.emit(_update(n, *_final(n, phase, reason), 100))
                if spec.required and phase in ("failed", "blocked", "unhealthy"):
                    ok = False
            await op.finish(ok)
        except Exception as e:  # an operation must always end, with the cause
            log.exception("start operation %s crashed", op.id)
            await self._discard_prepared(op, specs)
            for n in order:
                await op.emit(_update(n, "failed", f"start operation failed: {e}", 100))
            await op.finish(False)

    async def _start_one(self, op: Operation, plan: StartPlan, spec: ServiceSpec) -> None:
        name = spec.name
        events: list[tuple[str, dict[str, Any]]] = []  # written once the turn ended
        try:
            async with self._lock(name):
                await self._start_locked(op, plan, spec, events)
        finally:  # the final update goes out before dependants may start (finish)
            self._refresh_active()
            await op.emit(_update(name, *_final(name, plan.phase(name), plan.reason(name)), 100))
            plan.finish(name)
            op.changed.set()
            for kind, data in events:  # dependants are starting meanwhile
                await self._event(kind, name, **data)

    def _mark(
        self, op: Operation, plan: StartPlan, name: str, phase: Phase, reason: str = ""
    ) -> None:
        plan.mark(name, phase, reason)
        op.changed.set()

    async def _start_locked(
        self,
        op: Operation,
        plan: StartPlan,
        spec: ServiceSpec,
        events: list[tuple[str, dict[str, Any]]],
    ) -> None:
        """One service's turn: create, then wait for what dependants wait for. The events of
        how it ended go to ``events`` (the caller writes them once dependants may start)."""
        name = spec.name
        st = self.services.setdefault(name, ServiceState(name, spec))
        st.spec, st.desired = spec, True
        st.status, st.message = "starting", "creating"
        await op.emit(_update(name, "starting", f"Starting {name} ({spec.driver})", 10))
        prepared = op.prepared.pop(name, None)
        if prepared is not None:  # its start starts what was created
            await asyncio.gather(prepared, return_exceptions=True)
        try:
            try:
                inst = await self._create(spec, op.priority.get(name, 0))
            finally:  # however it ended: what waits to be prepared need not wait for it
                op.issued(name)
        except DriverError as e:
            st.status, st.message = "failed", str(e)
            st.backend_down = isinstance(e, DriverUnavailableError)
            self._mark(op, plan, name, "failed", str(e))
            self.metrics.starts.labels(name, "failed").inc()
            self.metrics.failed_starts.labels(name, e.reason).inc()
            events.append(("service_failed", {"error": str(e)}))
            await asyncio.to_thread(self._persist, st)
            return
        st.instance, st.started_at = inst, inst.started_at or time.time()
        st.backend_down = False
        self._mark(op, plan, name, "started")  # a `started` condition is met from here on
        await asyncio.to_thread(self._persist, st)
        await self._event("service_started", name, instance_id=inst.id, started_at=st.started_at)
        if spec.health is not None:
            await op.emit(_update(name, "starting", f"{name} started; waiting for health", 50))
            healthy, message = await self.wait_healthy(spec, inst)
            phase: Phase = "healthy" if healthy else "unhealthy"
            st.status, st.message = "running" if healthy else "unhealthy", message
            self._mark(op, plan, name, phase, message)
            self.metrics.starts.labels(name, "success" if healthy else "failed").inc()
            if not healthy:
                self.metrics.failed_starts.labels(name, "health_check_failed").inc()
            events.append((f"service_{phase}", {"message": message}))
            return
        if "completed" in plan.awaited(name):
            await op.emit(_update(name, "starting", f"{name} started; waiting for it to exit", 50))
            code = await self._wait_exit(spec, inst)
            if code == 0:
                # done, not wanted running: the health checker must not restart a finished job
                st.status, st.message, st.desired = "stopped", "completed (exit 0)", False
                self._mark(op, plan, name, "completed")
                await asyncio.to_thread(self._persist, st)
            else:
                st.status, st.message = "failed", f"exited with code {code}"
                self._mark(op, plan, name, "failed", st.message)
            return
        st.status, st.message = "running", "running (no health check)"
        self.metrics.starts.labels(name, "success").inc()

    async def _create(self, spec: ServiceSpec, priority: int = 0) -> Instance:
        drv = self.driver(spec)
        labels = self.labels(spec)
        # a backend that just started an instance is up: a start fails just as clearly
        # (DriverUnavailableError, with its hint) if it went away since
        if time.monotonic() - self._started_ok.get(spec.driver, -CHECK_FRESH_S) >= CHECK_FRESH_S:
            await self._call("check", drv.check)
        began: list[float] = []  # when each attempt began (unix seconds)

        async def before_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            await self._attempt_failed(spec.name, error, began, state.upcoming_sleep)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.start_attempts),
            wait=wait_exponential_jitter(
                multiplier=self.retry_initial_s, max=self.retry_max_s, jitter=self.retry_initial_s
            ),
            retry=retry_if_exception(_is_retryable),
            before_sleep=before_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    began.append(time.time())
                    inst = await self._start_instance(drv, spec, labels, priority)
                    self._started_ok[spec.driver] = time.monotonic()
                    return inst
        except DriverError as e:
            await self._attempt_failed(spec.name, e, began, None)
            if len(began) < 2:
                raise
            gave_up = f"{e} (gave up after {len(began)} attempts)"
            if isinstance(e, DriverUnavailableError):
                raise DriverUnavailableError(gave_up) from e
            raise DriverError(gave_up, reason=e.reason) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt_failed(
        self, name: str, error: BaseException | None, began: list[float], retry_in_s: float | None
    ) -> None:
        """A failed start attempt as an event, ``service_start_attempt_failed``: which of how
        many, when it began and failed (unix seconds with fraction), why, and the wait before
        the next (``retry_in_s``; None: none follows). A warning in the log too."""
        if not began:
            return
        reason = error.reason if isinstance(error, DriverError) else type(error).__name__
        data: dict[str, Any] = {
            "attempt": len(began),
            "of": self.start_attempts,
            "started_at": began[-1],
            "failed_at": time.time(),
            "error": str(error),
            "reason": reason,
            "retry_in_s": None if retry_in_s is None else round(retry_in_s, 4),
        }
        then = "giving up" if retry_in_s is None else f"next in {retry_in_s:.2f}s"
        log.warning("start of %s, attempt %d of %d, failed (%s): %s", name, len(began),
                    self.start_attempts, then, error)  # fmt: skip
        await self._event("service_start_attempt_failed", name, **data)

    async def _start_instance(
        self, drv: Driver, spec: ServiceSpec, labels: Mapping[str, str], priority: int
    ) -> Instance:
        return await self._in_slot("create_and_start", partial(drv.start, spec, labels), priority)

    async def _in_slot(self, op: str, fn: Callable[[], T], priority: int) -> T:
        """A driver call in a start slot (see START_SLOTS), given up after START_SLOT_HOLD_S."""
        await self._start_slots.acquire(priority)
        call = asyncio.ensure_future(self._call(op, fn))
        try:
            await asyncio.wait({call}, timeout=START_SLOT_HOLD_S)
        finally:
            self._start_slots.release()
        return await call

    async def _prepare(self, op: Operation, spec: ServiceSpec) -> None:
        """Create ``spec``'s instance while what it depends on starts, once the first wave's
        starts returned (at most PREPARE_AFTER_S later), in a start slot after every start
        waiting for one; a failure is left for its start to meet and report."""
        drv = self.driver(spec)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(op.first_wave_issued.wait(), PREPARE_AFTER_S)
        try:
            await self._in_slot("prepare", partial(drv.prepare, spec, self.labels(spec)), -1)
        except Exception as e:  # noqa: BLE001 - its start tries again and reports
            log.debug("preparing %s failed: %s", spec.name, e)

    async def _discard_prepared(self, op: Operation, specs: Mapping[str, ServiceSpec]) -> None:
        """Remove what was prepared for services that never started (a dependency failed)."""
        for name, task in list(op.prepared.items()):
            op.prepared.pop(name)
            await asyncio.gather(task, return_exceptions=True)
            spec = specs[name]
            drv = self.driver(spec)
            try:
                await self._call("discard", partial(drv.discard_prepared, spec, self.labels(spec)))
            except Exception:
                log.exception("removing the unstarted instance of %s failed", name)

    async def wait_healthy(self, spec: ServiceSpec, inst: Instance) -> tuple[bool, str]:
        """Probe until healthy, until the instance exits, or until ``health_timeout_s``."""
        assert spec.health is not None
        check = spec.health
        drv = self.driver(spec)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        deadline = begun + self.health_timeout_s if self.health_timeout_s else None
        engine = check.kind in ("command", "container")
        floor = HEALTH_POLL_EXEC_MIN_S if engine else HEALTH_POLL_MIN_S
        fraction = ENGINE_POLL_FRACTION if engine else HEALTH_POLL_FRACTION
        delay = min(floor, check.interval_s)
        attempts = 0
        last = "no probe yet"
        next_exit_check = begun  # the first failure looks at the instance
        while True:
            attempts += 1
            container_health = None
            if check.kind == "container":
                container_health = (await self._inspect(spec, inst.id)).health
            res = await probes.run_probe(
                check, exec_fn=probe_exec(spec, drv, inst.id), container_health=container_health
            )
            self.metrics.health_duration.labels(
                spec.name, "success" if res.healthy else "failed"
            ).observe(res.latency_s)
            if res.healthy:
                return True, res.message
            last = res.message
            if loop.time() >= next_exit_check:
                next_exit_check = loop.time() + EXIT_CHECK_EVERY_S
                now = await self._inspect(spec, inst.id)
                if now.state != "running":
                    return False, f"{now.state} (exit code {now.exit_code}) before healthy: {last}"
            if deadline is not None and loop.time() + delay > deadline:
                return False, (
                    f"not healthy after {self.health_timeout_s:g}s ({attempts} probes): {last}"
                )
            await asyncio.sleep(delay)
            waited = loop.time() - begun
            delay = min(max(floor, waited * fraction), check.interval_s, HEALTH_POLL_MAX_S)

    async def _wait_exit(self, spec: ServiceSpec, inst: Instance) -> int | None:
        """The instance's exit code once it ended (``None``: gone without one, or still
        running after ``health_timeout_s``), by the driver's blocking wait
        (:meth:`~rayinfra.services.drivers.base.Driver.wait_exit`) on a driver thread,
        EXIT_WAIT_S at a time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.health_timeout_s or 3600.0)
        drv = self.driver(spec)
        while (left := deadline - loop.time()) > 0:
            now = await self._call(
                "wait_exit", partial(drv.wait_exit, inst.id, min(EXIT_WAIT_S, left))
            )
            if now.ended:
                return now.exit_code
        return None

    # ------------------------------------------------------------------ pull
    def images(self) -> list[str]:
        """Images of the catalog's docker services (PullImages' default list)."""
        return sorted({s.image for s in self.catalog.values() if s.driver == "docker" and s.image})

    async def pull(self, images: Iterable[str] = ()) -> str:
        """Begin pulling ``images`` (empty = the catalog's); follow with :meth:`op_updates`.

        Updates: ``{image_name, status (downloading|extracting|complete|error), current,
        total, progress_percent, message}``; one final ``complete`` or ``error`` per image.

        A pull goes on when its caller leaves, so what is accepted is bounded: with
        ``max_queued_pulls`` images queued or pulling, a request for more raises
        :class:`~rayinfra.errors.QueueFullError` and queues nothing.
        """
        wanted = list(images) or self.images()
        for img in wanted:
            if not img or any(c.isspace() for c in img):
                raise InvalidArgumentError("image_names", f"{img!r} is not an image reference")
        if len(wanted) > self.max_queued_pulls:
            raise InvalidArgumentError(
                "image_names",
                f"{len(wanted)} images, over the {self.max_queued_pulls} that may be queued at "
                "once (services.max_queued_pulls): ask for fewer at a time",
            )
        if self._pulls_open + len(wanted) > self.max_queued_pulls:
            raise QueueFullError(
                f"image_names: {self._pulls_open} image pulls are queued or running, and "
                f"{len(wanted)} more would be over services.max_queued_pulls "
                f"({self.max_queued_pulls}): nothing was queued; ask again once some have ended"
            )
        self._pulls_open += len(wanted)
        return self._new_op("pull", wanted, self._run_pull)

    async def _run_pull(self, op: Operation, images: list[str]) -> None:
        ok = True
        left = len(images)
        try:
            for image in images:
                ok = await self._pull_one(op, image) and ok
                left -= 1
                self._pulls_open -= 1
            await op.finish(ok)
        finally:  # cancelled (the manager closed): what it had not pulled is not queued now
            self._pulls_open -= left

    async def _pull_one(self, op: Operation, image: str) -> bool:
        """Pull ``image`` on the pull threads, its progress as ``op``'s updates; succeeded?"""
        drv = self.drivers.get("docker")
        if drv is None:
            await op.emit(_pull_update(image, "error", 0, 0, "no docker driver"))
            return False
        queue: asyncio.Queue[Any] = asyncio.Queue()
        t0 = time.perf_counter()
        if self._pulls is None:
            self._pulls = ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="svc-pull")
        loop = asyncio.get_running_loop()
        worker = loop.run_in_executor(self._pulls, _pull_into, drv, image, loop, queue)
        last: tuple[str, int] = ("", -1)
        current = total = 0
        while True:
            item = await queue.get()
            if item is None or isinstance(item, BaseException):  # the pull ended
                failed = item is not None
                status, message = ("error", str(item)) if failed else ("complete", "pulled")
                await op.emit(_pull_update(image, status, current, total, message))
                outcome = "error" if failed else "success"
                elapsed = time.perf_counter() - t0
                self.metrics.driver_duration.labels("pull", outcome).observe(elapsed)
                await worker
                return not failed
            current, total = item.current, item.total
            pct = int(100 * current / total) if total else 0
            if item.status == "complete":
                continue  # sent once the pull returned
            if (item.status, pct) != last:  # one update per percent and phase
                last = (item.status, pct)
                await op.emit(_pull_update(image, item.status, current, total, item.message))

    # ------------------------------------------------------------------ stop / restart
    async def stop(
        self, names: Iterable[str] = (), timeout_s: float | None = None
    ) -> dict[str, str]:
        """Stop ``names`` (empty = everything this manager runs), dependants first.

        Returns ``name -> result`` ("stopped", "not running", or "error: ..."); truthful per
        service.
        """
        wanted = self.known("service_names", names)
        if not wanted:  # orphans only go when named (or pruned)
            wanted = [
                n
                for n, s in self.services.items()
                if n in self.catalog and (s.desired or s.instance)
            ]
        specs = {n: s.spec for n, s in self.services.items()}
        results: dict[str, str] = {}
        for n in stop_order(specs, wanted):
            results[n] = await self.stop_one(n, timeout_s)
            if n not in self.catalog and not results[n].startswith("error"):
                self.services.pop(n, None)  # a stopped orphan is forgotten
        return results

    def orphans(self) -> list[str]:
        """Services with an instance that the current catalog no longer has."""
        return sorted(n for n, s in self.services.items() if s.status == "orphaned")

    async def prune(self, timeout_s: float | None = None) -> dict[str, str]:
        """Stop, remove and forget every orphaned service: ``name -> stop result``."""
        names = self.orphans()
        return await self.stop(names, timeout_s) if names else {}

    async def stop_one(self, name: str, timeout_s: float | None = None) -> str:
        """Stop one service (``timeout_s`` None or <= 0: ``stop_timeout_s``): its result."""
        timeout = self.stop_timeout_s if timeout_s is None or timeout_s <= 0 else timeout_s
        st = self.services[name]
        async with self._lock(name):
            st.desired = False
            if st.instance is None:
                await asyncio.to_thread(self._persist, st)
                st.status = "stopped" if st.status != "failed" else st.status
                return "not running"
            drv = self.driver(st.spec)
            try:
                await self._call("stop", partial(drv.stop, st.instance.id, timeout))
                await self._call("remove", partial(drv.remove, st.instance.id))
            except DriverError as e:
                self.metrics.stops.labels(name, "error").inc()
                st.message = f"stop failed: {e}"
                await asyncio.to_thread(self._persist, st)
                return f"error: {e}"
            st.instance, st.started_at = None, None
            st.status, st.message = "stopped", "stopped"
            self.metrics.stops.labels(name, "success").inc()
            await asyncio.to_thread(self._persist, st)
            await self._event("service_stopped", name)
            self._refresh_active()
            return "stopped"

    async def restart(
        self, name: str, timeout_s: float | None = None, reason: str = "requested"
    ) -> tuple[bool, str]:
        """Stop then start one service with its current spec (dependencies must run)."""
        self.known("service_name", [name])
        if name not in self.catalog:
            raise InvalidArgumentError(
                "service_name",
                f"{name} is orphaned (no longer in the config): add it back to the config, "
                "or `rayinfra services prune` stops and forgets it",
            )
        st = self.services[name]
        wanted = st.desired
        res = await self.stop_one(name, timeout_s)
        if res.startswith("error"):
            # the old instance is as it was (its engine may be down): still wanted as before,
            # so the health checker tries again instead of forgetting it
            st.desired = wanted
            await asyncio.to_thread(self._persist, st)
            return False, f"Failed to stop service: {res}"
        spec = st.spec.model_copy(update={"depends_on": []})
        plan = StartPlan({name: spec}, [name], parallel=1)
        plan.startable()
        op = Operation(id=f"restart-{uuid.uuid4().hex[:8]}", names=[name])
        await self._start_one(op, plan, spec)
        await self._event("service_restarted", name, reason=reason)
        if st.status == "running":
            return True, f"Service {name} restarted successfully"
        return False, f"Failed to start service: {st.message}"

    # ------------------------------------------------------------------ status
    def status(self, names: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        wanted = self.known("service_names", names)
        return {n: self.services[n].as_dict() for n in (wanted or sorted(self.services))}

    def known(self, field: str, names: Iterable[str]) -> list[str]:
        """``names`` as a list; an unknown one is :class:`InvalidArgumentError` on ``field``."""
        wanted = list(names)
        for n in wanted:
            if n not in self.services:
                raise InvalidArgumentError(
                    field, f"unknown service {n!r}; known: {sorted(self.services)}"
                )
        return wanted

    async def refresh(self) -> None:
        """Re-read every instance's state from its driver (exits, removals by hand); start
        what waits for its driver's backend once it answers (:meth:`_start_when_available`)."""
        for st in list(self.services.values()):
            if st.instance is None or self._lock(st.name).locked():
                continue
            try:
                inst = await self._inspect(st.spec, st.instance.id)
            except DriverError as e:
                if st.message != str(e):
                    log.warning("cannot look at service %s: %s", st.name, e)
                st.message = str(e)
                continue
            st.instance = inst
            if inst.state != "running" and st.status in ("running", "unhealthy", "starting"):
                st.status = "failed"
                st.message = f"{inst.state} (exit code {inst.exit_code})"
        self._refresh_active()
        await self._start_when_available()

    async def _start_when_available(self) -> None:
        """Start again the services wanted running whose start could not reach their driver's
        backend (a Docker engine restarting; a registry that recovered while it was down),
        once the backend answers: desired state, reconciled. A running instance of the same
        spec is adopted by the driver's start."""
        waiting: dict[str, list[ServiceState]] = {}
        for st in self.services.values():
            if (
                st.backend_down
                and st.desired
                and st.instance is None
                and st.name in self.catalog
                and not self._lock(st.name).locked()
            ):
                waiting.setdefault(st.spec.driver, []).append(st)
        for kind, states in waiting.items():
            try:
                await self._call("check", self.drivers[kind].check)
            except DriverError:
                continue  # still down: the next refresh asks again
            for st in states:
                log.info("the %s backend answers again: starting %s", kind, st.name)
                st.backend_down = False  # set again if this start meets it down
                self._spawn(self.restart(st.name, reason="backend available again"))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._pulls is not None:  # pulls not begun are dropped: nobody follows them now
            self._pulls.shutdown(wait=False, cancel_futures=True)
        self._pool = self._pulls = None


class PrioritySlots:
    """At most ``n`` holders at once; waiters get a slot highest ``priority`` first (in
    arrival order within one priority)."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: int = 0) -> None:
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._arrivals), slot))
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():  # handed over as we were cancelled
                self.release()
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, slot = heapq.heappop(self._waiting)
            if not slot.done():  # a cancelled waiter's future is done: skip it
                slot.set_result(None)
                return
        self.free += 1


def chain_heights(specs: Mapping[str, ServiceSpec], order: list[str]) -> dict[str, int]:
    """For each service of ``order`` (dependencies first), the longest chain of services in
    ``order`` that wait on it one behind another (0: nothing waits on it)."""
    height = dict.fromkeys(order, 0)
    for name in reversed(order):  # dependants before their dependencies
        for d in specs[name].depends_on:
            if d.service in height:
                height[d.service] = max(height[d.service], height[name] + 1)
    return height


def _orphan(name: str, driver: str, saved: ServiceSpec | None, inst: Instance) -> ServiceState:
    """An instance of a service the catalog no longer has, under the spec it was started with
    (its dependencies dropped: they may be gone too), else under a placeholder naming only its
    driver (never started from, so it skips validation)."""
    if saved is not None and saved.driver == driver:
        spec = saved.model_copy(update={"depends_on": []})
    else:
        spec = ServiceSpec.model_construct(name=name, driver=driver)
    message = (
        f"not in the current config ({inst.state}); `rayinfra services prune` stops and forgets it"
    )
    return ServiceState(name, spec, "orphaned", message, instance=inst, started_at=inst.started_at)


def _update(name: str, status: str, message: str, progress: int) -> dict[str, Any]:
    return {
        "service_name": name,
        "status": status,
        "message": message,
        "progress": progress,
        "ts": time.time(),
    }


def _pull_into(
    drv: Driver, image: str, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]
) -> None:
    """Thread body: the driver's pull progress into ``queue``; then ``None`` or the error."""
    try:
        drv.check()
        for p in drv.pull(image):
            loop.call_soon_threadsafe(queue.put_nowait, p)
        loop.call_soon_threadsafe(queue.put_nowait, None)
    except Exception as e:  # noqa: BLE001 - reported as this image's error update
        loop.call_soon_threadsafe(queue.put_nowait, e)


def _pull_update(image: str, status: str, current: int, total: int, message: str) -> dict[str, Any]:
    pct = 100 if status == "complete" else (int(100 * current / total) if total else 0)
    return {
        "image_name": image,
        "status": status,
        "current": current,
        "total": total,
        "progress_percent": pct,
        "message": message,
        "ts": time.time(),
    }


def _final(name: str, phase: str, reason: str) -> tuple[str, str]:
    if phase == "healthy":
        return "healthy", f"{name} is healthy" + (f": {reason}" if reason else "")
    if phase == "starting":
        return "failed", f"{name} did not finish starting: {reason or 'interrupted'}"
    if phase == "started":
        return "healthy", f"{name} is running (no health check)"
    if phase == "completed":
        return "stopped", f"{name} completed (exit 0)"
    if phase == "unhealthy":
        return "unhealthy", f"{name} is unhealthy: {reason}"
    if phase == "blocked":
        return "blocked", f"{name} not started: {reason}"
    if phase == "failed":
        return "failed", f"{name} failed: {reason}"
    return "failed", f"{name} ended in phase {phase}"

"""The control actors as their callers see them: the gateway's servers and the Python client
over actor handles (:class:`~rayinfra.client.ActorTransport` is a ControlPlane) both go through
a :class:`ControlPlane`, so "ask the scheduler for a task's status", "is the runtime healthy"
and "every metric" are each written once. It implements the client's
:class:`~rayinfra.client.transport.Transport` primitives.

Calls go through :class:`rayinfra.raywrap.ActorCaller` (an actor that is missing or dying
becomes :class:`~rayinfra.errors.UnavailableError`; what an actor raised comes back as itself). Given a
:class:`~rayinfra.admission.Submitter` (the gateway, which shares the head's state store), submits
are admitted in this process; without one they go to the scheduler actor, which admits them with
its own Submitter — the same function either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

from rayinfra import raywrap
from rayinfra._version import __version__
from rayinfra.admission import Submitter
from rayinfra.compat import original_task_metrics
from rayinfra.config import CONTROL_ACTOR_NAMES
from rayinfra.errors import InvalidArgumentError, UnavailableError
from rayinfra.models import (
    EVENT_KEYS,
    FROM_NOW,
    StatusRows,
    TaskPage,
    TaskStatus,
    decode_list_cursor,
)
from rayinfra.runtime_health import assess
from rayinfra.scheduling.tasks import TASK_STATES
from rayinfra.single_flight import SharedCalls
from rayinfra.taskstore import status_of_event

WORKFLOW_DONE = frozenset({"completed", "failed", "cancelled"})  # the stream's final statuses

#: whose registries the orchestrator's ``/metrics`` and GetMetrics serve (the first required)
ORCHESTRATOR_METRICS = ("scheduler", "event_bus", "workflows")
HEALTH_PING_TIMEOUT_S = 2.0
HEALTH_REUSE_S = 0.5
"""How old a health assessment may be when it is given again (:meth:`ControlPlane.health_report`)."""
STATUS_TIMEOUT_S = 5.0
LIST_LIMIT_MAX = 10_000
EVENT_POLL_S = 20.0
EVENT_BATCH = 1000


class ControlPlane:
    kind = "actors"

    def __init__(self, caller: raywrap.ActorCaller, submitter: Submitter | None = None) -> None:
        self.caller = caller
        self.submitter = submitter
        # required services -> the health assessment callers share
        self._health: SharedCalls[tuple[bool, dict[str, str]]] = SharedCalls(lambda: HEALTH_REUSE_S)
        # metrics asked at the same time (scrapers, dashboards): one round of the actors
        self._metrics: SharedCalls[dict[str, float]] = SharedCalls()
        self._metrics_text: SharedCalls[bytes] = SharedCalls()

    async def open(self) -> None:
        await self.call("scheduler", "ping")

    async def close(self) -> None:
        return None

    async def call(
        self, actor: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        return await self.caller.call(actor, method, *args, timeout_s=timeout_s)

    # ------------------------------------------------------------------ tasks
    async def submit(
        self, specs: Sequence[Mapping[str, Any]], trusted: bool = True, source: str = "client"
    ) -> list[dict[str, Any]]:
        """Admit a batch (all or nothing); ``{success, task_id, error}`` once it is durable.

        With a submitter (the gateway's own ControlPlane) the batch is admitted here; without
        one (a client's) it goes to the gateway actor, which admits it the same way: an idle
        actor next to the store, where the scheduler would answer only between dispatches."""
        return [
            {"success": True, "task_id": t, "error": ""}
            for t in await self.admit(specs, trusted, source)
        ]

    async def admit(
        self, specs: Sequence[Mapping[str, Any]], trusted: bool = True, source: str = "client"
    ) -> list[str]:
        """:meth:`submit` as the ids of the batch, in order (a batch is all or nothing, so each
        reply is a success): the form it crosses the gateway actor's boundary in."""
        if self.submitter is None:
            ids: list[str] = await self.call("gateway", "submit", list(specs), trusted, source)
            return ids
        admitted = await self.submitter.submit(specs, trusted=trusted, source=source)
        return [s.task_id for s in admitted.specs]

    async def slurm_job(self, task_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The Slurm job record of a ``gpu_slurm`` task (``None``: none), waiting up to
        ``wait_s`` for its sbatch."""
        job: dict[str, Any] | None = await self.call(
            "scheduler", "slurm_job", task_id, wait_s, timeout_s=wait_s + 30.0
        )
        return job

    async def get(
        self, task_ids: Sequence[str], finished_only: bool = False
    ) -> Mapping[str, TaskStatus | None]:
        found: StatusRows = await self.call("scheduler", "get", list(task_ids), finished_only)
        return found  # each decoded as it is read

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(await self.call("scheduler", "cancel", task_id))

    async def purge(self, older_than_s: float | None) -> dict[str, int]:
        return dict(await self.call("scheduler", "purge", older_than_s))

    async def list_tasks(
        self, status: str | None, task_class: str | None, limit: int, after: str | None = None
    ) -> TaskPage:
        """The newest tasks, a page of at most ``limit`` (after the cursor ``after``) with the
        cursor of the next; ``InvalidArgumentError`` names a bad ``status``, ``limit`` or
        ``after``."""
        if status and status not in TASK_STATES:
            raise InvalidArgumentError(
                "status", f"unknown status {status!r}; valid: {', '.join(TASK_STATES)}"
            )
        if not 0 < limit <= LIST_LIMIT_MAX:
            raise InvalidArgumentError("limit", f"must be between 1 and {LIST_LIMIT_MAX}")
        if after:
            decode_list_cursor(after)  # a bad one is the caller's error, named here
        # one row more than the page: whether there is a next page, without an empty last one
        rows = await self.call("scheduler", "list_tasks", status, task_class, limit + 1, after)
        tasks = [TaskStatus.from_scheduler(d) for d in rows[:limit]]
        return TaskPage(tasks, rows[limit - 1]["cursor"] if len(rows) > limit else None)

    async def changes(
        self,
        after_seq: int,
        task_ids: Sequence[str] | None,
        timeout_s: float,
        terminal_only: bool,
        keep: Collection[str] | None = None,
    ) -> tuple[int, list[TaskStatus]]:
        seq, changes = await self.call(
            "scheduler", "changes", after_seq, task_ids, timeout_s, terminal_only
        )
        if keep is not None:  # before decoding: what is not kept costs nothing more
            changes = [row for row in changes if row[2] in keep]
        states = map(status_of_event, changes)  # None: the scheduler's restart, not a task's
        return int(seq), [st for st in states if st is not None]

    # ------------------------------------------------------------------ metrics, health
    async def metrics(self) -> dict[str, float]:
        """Every actor's metrics in one map (the scheduler's are required, others best effort),
        plus the original's task gauges (``tasks_pending``, ``tasks_running``,
        ``tasks_completed``, ``tasks_tracked_total``: :func:`rayinfra.compat.original_task_metrics`).
        Callers at the same time share one round of the actors (each gets its own map)."""
        return dict(await self._metrics.get((), self._gather_metrics))

    async def _gather_metrics(self) -> dict[str, float]:
        own, status, *others = await asyncio.gather(
            self.call("scheduler", "metrics_snapshot"),
            self.call("scheduler", "status"),
            *(self._optional(a, "metrics_snapshot") for a in (*ORCHESTRATOR_METRICS[1:], "service_registry")),
        )  # fmt: skip
        out: dict[str, float] = dict(own)
        for snapshot in others:
            out.update(snapshot or {})
        for name, value in original_task_metrics(out, status["counts"]).items():
            out.setdefault(name, value)  # as the original: a registry's own series wins
        return out

    async def metrics_text(self, actors: Sequence[str]) -> bytes:
        """The Prometheus text of several actors' registries, one after another: the first
        actor's is required, the others' best effort (one that does not answer is left out).
        The actors are asked at once; callers at the same time share one round."""
        first, *rest = actors

        async def gather() -> bytes:
            parts = await asyncio.gather(
                self.call(first, "metrics_text"),
                *(self._optional(a, "metrics_text") for a in rest),
            )
            return b"".join(p for p in parts if p is not None)

        return await self._metrics_text.get(tuple(actors), gather)

    async def _optional(self, actor: str, method: str) -> Any:
        """A best-effort call: ``None`` when the actor is unavailable or does not answer in
        ``STATUS_TIMEOUT_S``."""
        with contextlib.suppress(UnavailableError):
            return await self.call(actor, method, timeout_s=STATUS_TIMEOUT_S)
        return None

    async def events(
        self, event_types: Sequence[str] | None, since_timestamp: int, after_seq: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        types = list(event_types) if event_types else None
        start, since = (after_seq, None) if after_seq else (0, since_timestamp or None)
        seq, events = await self.call(  # neither a seq nor a time: from now on
            "scheduler", "events", start if after_seq or since_timestamp else FROM_NOW, since,
            types, EVENT_BATCH,
        )  # fmt: skip
        while True:
            for e in events:
                yield {k: e[k] for k in EVENT_KEYS}
            seq, events = await self.call(
                "scheduler", "events", seq, None, types, EVENT_BATCH, EVENT_POLL_S
            )

    async def runtime_status(self, services: Sequence[str]) -> dict[str, Any]:
        return dict(await self.call("gateway", "runtime_status", list(services)))

    async def health(self) -> dict[str, Any]:
        healthy, services = await self.health_report()
        return {"healthy": healthy, "version": __version__, "services": services}

    async def health_report(
        self, required_services: Sequence[str] = ()
    ) -> tuple[bool, dict[str, str]]:
        """(healthy, component -> status): :func:`rayinfra.runtime_health.assess` over the
        control actors' pings and the service registry's rows. Healthy while the scheduler and
        the gateway answer and every required selected service runs; an optional service or an
        auxiliary actor that is down shows as degraded (its status, and the summary under
        ``orchestrator``), without making the runtime unhealthy.

        Callers at the same time share one assessment, and one that started less than
        :data:`HEALTH_REUSE_S` before a request answers it too (one that failed is not reused):
        a health check polled hard (load balancers, probes, every port's ``Health``) costs a
        ping per actor per interval instead of per request."""
        key = tuple(required_services)
        return await self._health.get(key, lambda: self._assess_health(key))

    async def _assess_health(self, required_services: Sequence[str]) -> tuple[bool, dict[str, str]]:
        pings = await self.caller.ping_each(CONTROL_ACTOR_NAMES, HEALTH_PING_TIMEOUT_S)
        actors = {
            name: "unavailable: not running"
            if answer is None
            else f"unavailable: {type(answer).__name__}: {answer}"
            if isinstance(answer, BaseException)
            else "healthy"
            for name, answer in pings.items()
        }
        rows: dict[str, Any] | None = None
        error = ""
        if actors.get("service_registry") == "healthy":
            try:
                rows = await self.call("service_registry", "status", [], timeout_s=STATUS_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - reported in the map
                error = str(e)
        report = assess(actors, rows, required_services, registry_error=error)
        return report.healthy, report.services

    # ------------------------------------------------------------------ workflows
    async def create_workflow(
        self, spec: Mapping[str, Any], workflow_id: str, trusted: bool = True
    ) -> dict[str, Any]:
        saved: dict[str, Any] = await self.call(
            "workflows", "create_workflow", dict(spec), workflow_id, trusted
        )
        return saved

    async def start_workflow_run(
        self, workflow_id: str, idempotency_key: str, run_input: Mapping[str, Any]
    ) -> dict[str, Any]:
        record: dict[str, Any] = await self.call(
            "workflows", "start_run", workflow_id, idempotency_key, dict(run_input)
        )
        return record

    async def get_workflow_run(self, run_id: str) -> dict[str, Any]:
        record: dict[str, Any] = await self.call("workflows", "get_run", run_id)
        return record

    async def list_workflows(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = await self.call("workflows", "list_workflows")
        return items

    async def list_workflow_runs(self, workflow_id: str, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = await self.call("workflows", "list_runs", workflow_id, limit)
        return items

    async def cancel_workflow_run(self, run_id: str) -> dict[str, Any]:
        record: dict[str, Any] = await self.call("workflows", "cancel_run", run_id)
        return record

    async def workflow_status(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        seq = FROM_NOW
        seq, _ = await self.call("workflows", "run_updates", run_id, seq, 0.0)
        last = await self.call("workflows", "run_progress", run_id)
        yield last
        while last["status"] not in WORKFLOW_DONE:
            seq, updates = await self.call(
                "workflows", "run_updates", run_id, seq, EVENT_POLL_S, timeout_s=EVENT_POLL_S + 30
            )
            if updates:  # one change of the run may be several events: its last state
                data = updates[-1]["data"]
                progress = {k: data[k] for k in last if k in data}
                if progress != last:
                    last = progress
                    yield last

"""The ``workflows`` control actor: a thin shell around the workflow engine
(:mod:`rayinfra.workflows.engine`), its definition files and run records
(:mod:`rayinfra.workflows.store`).

Steps are admitted like any task (:class:`~rayinfra.admission.Submitter`, trusted: the workflow's
author was admitted by the gateway), the scheduler woken with the doorbell as the gateway does;
their ends are read from the events table. Run and step transitions are events too
(``workflow_started``, ``step_started``, ``step_completed``, ``step_failed``,
``workflow_completed``, ``workflow_failed``, ``workflow_cancelled``; resource id: the run id), so
:meth:`WorkflowsActor.run_updates` streams a run from the durable feed and resumes after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from rayinfra import doorbell, raywrap, taskstore
from rayinfra.actors.base import ControlActor
from rayinfra.actors.slurm_pool import SlurmGate
from rayinfra.admission import Submitter, check_class_policy
from rayinfra.config import CLASS_ALIASES
from rayinfra.errors import (
    InvalidArgumentError,
    NotTrustedError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
)
from rayinfra.store import EventRecord
from rayinfra.workflows.engine import MISSING, Engine, TaskEnd
from rayinfra.workflows.metrics import WorkflowMetrics
from rayinfra.workflows.runs import Run, new_run, runs_code
from rayinfra.workflows.spec import VALID_ID, SpecError, Workflow, parse_workflow
from rayinfra.workflows.store import DefinitionStore, RunStore

log = logging.getLogger(__name__)

RUN_EVENTS = (
    "workflow_started",
    "step_started",
    "step_completed",
    "step_failed",
    "workflow_completed",
    "workflow_failed",
    "workflow_cancelled",
)


class _Ports:
    """The engine's view of the runtime, over this actor's store, submitter and caller."""

    def __init__(self, actor: WorkflowsActor) -> None:
        self.actor = actor

    async def submit(self, specs: list[dict[str, Any]]) -> None:
        await self.actor.submitter.submit(specs, trusted=True, source="workflow")

    async def ended(self, task_ids: Sequence[str]) -> list[TaskEnd]:
        rows = await self.actor.store.aread(partial(taskstore.get_tasks, ids=list(task_ids)))
        out = []
        for tid in task_ids:
            row = rows.get(tid)
            if row is None:
                out.append(TaskEnd(tid, MISSING, None, ""))
            elif row.status in ("completed", "failed", "cancelled"):
                out.append(TaskEnd(tid, row.status, row.result, row.error or ""))
        return out

    async def next_ended(
        self, after_seq: int, task_ids: Sequence[str] | None, timeout_s: float
    ) -> tuple[int, list[TaskEnd]]:
        """From the scheduler's task feed: its long-poll wakes at once, where reading the
        events table from this process would poll."""
        seq, changes = await self.actor.caller.call(
            "scheduler", "changes", after_seq, task_ids, timeout_s, True, timeout_s=timeout_s + 30
        )
        ends = []
        for row in changes:
            if row[1] not in taskstore.TERMINAL_EVENTS:
                continue
            c = taskstore.decode_change(row)
            data = c["data"]
            ends.append(
                TaskEnd(c["key"], data["status"], data.get("result"), data.get("error") or "")
            )
        return int(seq), ends

    async def cancel(self, task_id: str) -> None:
        await self.actor.caller.call("scheduler", "cancel", task_id, 0.0, timeout_s=60.0)

    async def save(self, runs: Sequence[Run]) -> None:
        await self.actor.runs.save(runs)

    async def emit(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        self.actor.metrics.on_events([t for t, _, _ in events], [d for _, _, d in events])
        now = int(time.time())
        records = [EventRecord(0, t, run_id, data, now) for t, run_id, data in events]
        await asyncio.wrap_future(self.actor.store.append_events(records))

    def last_seq(self) -> int:
        return self.actor.store.last_event_seq()


class WorkflowsActor(ControlActor):
    NAME = "workflows"
    metrics: WorkflowMetrics

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self.definitions = DefinitionStore(cfg.workflow_store_dir)
        self.metrics = WorkflowMetrics()
        self.runs = RunStore(self.store)
        self._bell = doorbell.Bell(doorbell.address(cfg.state.db_path, "scheduler"))
        self.submitter = Submitter(self.store, cfg, self._bell.ring_soon, slurm=SlurmGate(cfg))
        self.caller = raywrap.ActorCaller(retry_for_s=30.0)
        slurm = cfg.slurm.template_dir is not None or cfg.slurm.task_template is not None
        self.engine = Engine(_Ports(self), slurm=slurm)
        self._start_lock = asyncio.Lock()
        self._started = asyncio.create_task(self.engine.start(self.runs.unfinished()))
        self._publisher = asyncio.create_task(self.publishing_metrics())

    async def _ready(self) -> None:
        await asyncio.shield(self._started)

    # ------------------------------------------------------------------ definitions
    def _parse(self, spec: Any, workflow_id: str, trusted: bool) -> Workflow:
        """Validate; a workflow whose steps run code (shell/python tasks, Slurm jobs) only from
        a trusted caller: its runs submit its steps with its author's trust."""
        wf = parse_workflow(spec, classes=[*self.config.classes, *CLASS_ALIASES])
        if workflow_id:
            if not VALID_ID.fullmatch(workflow_id):
                raise SpecError(
                    "id", "must be 1-128 of [A-Za-z0-9_.-], starting with one of A-Za-z0-9"
                )
            wf = wf.model_copy(update={"id": workflow_id})
        if not trusted:
            where = runs_code(wf, slurm=self.engine.slurm)
            if where is not None:
                raise NotTrustedError(where, "runs code; send the gateway's token")
        for i, node in enumerate(wf.nodes):  # refused now rather than when the step comes due
            if node.task is not None:
                check_class_policy(
                    node.task.task_class,
                    node.task.payload,
                    self.config,
                    field=f"nodes[{i}].task.payload.type",
                )
        return wf

    async def create_workflow(
        self, spec: Any, workflow_id: str = "", trusted: bool = True
    ) -> dict[str, Any]:
        """Validate and store a definition (a new version when its id exists)."""
        wf = self._parse(spec, workflow_id, trusted)
        saved = await asyncio.to_thread(self.definitions.save, wf, replace=False)
        return saved.to_json()

    async def update_workflow(
        self, workflow_id: str, spec: Any, trusted: bool = True
    ) -> dict[str, Any]:
        wf = self._parse(spec, workflow_id, trusted)
        saved = await asyncio.to_thread(self.definitions.save, wf, replace=True)
        return saved.to_json()

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return (await asyncio.to_thread(self.definitions.get, workflow_id)).to_json()

    async def list_workflows(self) -> list[dict[str, Any]]:
        return [w.trimmed() for w in await asyncio.to_thread(self.definitions.all)]

    async def workflow_history(self, workflow_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.definitions.history, workflow_id)

    async def workflows_total(self) -> int:
        return await asyncio.to_thread(self.definitions.count)

    # ------------------------------------------------------------------ runs
    async def start_run(
        self,
        workflow_id: str,
        idempotency_key: str = "",
        run_input: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a run (``{..., "reused": bool}``): the same idempotency key returns the run it
        started before, whatever its status."""
        await self._ready()
        if run_input is not None and not isinstance(run_input, Mapping):
            raise InvalidArgumentError("input", "must be an object")
        async with self._start_lock:
            if idempotency_key:
                found = await asyncio.to_thread(self.runs.by_key, workflow_id, idempotency_key)
                if found is not None:
                    return {**self._live(found).record(), "reused": True}
            wf = await asyncio.to_thread(self.definitions.get, workflow_id)
            run = new_run(wf, run_input or {}, idempotency_key, time.time())
            await self.engine.begin(run)
        return {**run.record(), "reused": False}

    def _live(self, run: Run) -> Run:
        return self.engine.runs.get(run.id, run)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        run = self.engine.runs.get(run_id) or await asyncio.to_thread(self.runs.get, run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        return run.record()

    async def list_runs(self, workflow_id: str, limit: int = 50) -> list[dict[str, Any]]:
        if limit <= 0:
            raise InvalidArgumentError("limit", "must be > 0")
        if not await asyncio.to_thread(self.definitions.exists, workflow_id):
            raise WorkflowNotFoundError(workflow_id)
        runs = await asyncio.to_thread(self.runs.of_workflow, workflow_id, limit)
        return [self._live(r).record() for r in runs]

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a run (its running tasks are cancelled); a finished run stays as it is."""
        await self._ready()
        run = await self.engine.cancel(run_id)
        if run is None:
            return await self.get_run(run_id)
        return run.record()

    async def run_progress(self, run_id: str) -> dict[str, Any]:
        """The stream's view of a run now (``status`` in the proto's words)."""
        run = self.engine.runs.get(run_id) or await asyncio.to_thread(self.runs.get, run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        return run.progress()

    async def run_updates(
        self, run_id: str, after_seq: int = 0, timeout_s: float = 30.0
    ) -> tuple[int, list[dict[str, Any]]]:
        """Long-poll a run's events after ``after_seq``: ``(seq, [{seq, event_type, data}])``;
        each event's data holds the run's progress at that moment."""
        seq, rows = await self.poll_events(
            after_seq, types=RUN_EVENTS, resource_ids=[run_id], timeout_s=timeout_s
        )
        return seq, [{"seq": e.seq, "event_type": e.event_type, "data": e.data} for e in rows]

    async def refresh_metrics(self) -> None:
        self.metrics.workflows.set(await asyncio.to_thread(self.definitions.count))
        self.metrics.active.set(len(self.engine.runs))

    async def status(self) -> dict[str, Any]:
        return {
            "active_runs": len(self.engine.runs),
            "workflows": await self.workflows_total(),
        }

    async def shutdown(self) -> bool:
        self._publisher.cancel()
        self.engine.stop()
        self._bell.close()
        return await super().shutdown()


__all__ = ["SpecError", "WorkflowsActor"]

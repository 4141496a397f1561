"""The workflow engine: plain asyncio over the run state machine (:mod:`rayinfra.workflows.runs`).

Every step's attempt is a task submitted through the runtime's admission path (so it gets the
class's priority, adaptive concurrency, retries and durability); the engine learns that a task
ended from the events table (``task_completed``/``failed``/``cancelled``), reads its row for the
result, and decides what runs next. Independent branches run at once.

Durability: a run's record (with the workflow as it was when the run started) is saved after
every change, after the tasks it names were submitted. On start the engine resumes every run that
was not finished: a step recorded running is watched again (its task may have ended meanwhile: its
row tells), a step recorded pending is submitted again under the same task id (admission
acknowledges a repeat as a duplicate and never runs it twice), a succeeded step is never
submitted again. The engine talks to the outside only through :class:`Ports`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rayinfra.errors import BackendUnavailableError, InvalidArgumentError
from rayinfra.models import FEED_IDS_SENT_MAX
from rayinfra.workflows.runs import Decision, Run, step_task
from rayinfra.workflows.spec import Workflow, parse_workflow

__all__ = ["Engine", "Ports", "TaskEnd"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0
RESUBMIT_AFTER_S = 1.0


MISSING = "missing"


@dataclass(frozen=True)
class TaskEnd:
    """How a step's task ended (from its row)."""

    task_id: str
    status: str  # completed | failed | cancelled, or MISSING: no such task
    result: Any
    error: str


class Ports(Protocol):
    """What the engine needs from the runtime (the ``workflows`` actor provides them)."""

    async def submit(self, specs: list[dict[str, Any]]) -> None:
        """Admit task specs (all or nothing; a repeated id with the same spec is a no-op)."""
        ...

    async def ended(self, task_ids: Sequence[str]) -> list[TaskEnd]:
        """Those of ``task_ids`` that have ended, and (status :data:`MISSING`) those that
        do not exist."""
        ...

    async def next_ended(
        self, after_seq: int, task_ids: Sequence[str] | None, timeout_s: float
    ) -> tuple[int, list[TaskEnd]]:
        """Those of ``task_ids`` (None: any task) that ended after event ``after_seq``
        (waits up to ``timeout_s`` for one)."""
        ...

    async def cancel(self, task_id: str) -> None: ...

    async def save(self, runs: Sequence[Run]) -> None:
        """Persist run records (before the events that announce them)."""
        ...

    async def emit(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Append ``(event type, run id, data)`` events."""
        ...

    def last_seq(self) -> int: ...


class Engine:
    """Runs workflow runs; one loop for all of them."""

    def __init__(
        self, ports: Ports, *, slurm: bool = False, clock: Callable[[], float] = time.time
    ):
        self.ports = ports
        self.slurm = slurm
        self.clock = clock
        self.runs: dict[str, Run] = {}  # unfinished runs
        self._by_task: dict[str, str] = {}  # task id -> run id, for running steps
        self._workflows: dict[str, Workflow] = {}  # run id -> its workflow snapshot
        self._cursor = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._changed: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, unfinished: Sequence[Run]) -> None:
        """Resume ``unfinished`` runs and start the loop."""
        self._cursor = self.ports.last_seq()
        async with self._lock:
            for run in unfinished:
                self._adopt(run)
            running = list(self._by_task)
            ended = await self.ports.ended(running) if running else []
            now = self.clock()
            for end in [e for e in ended if e.status == MISSING]:  # saved, never submitted
                run = self.runs[self._by_task.pop(end.task_id)]
                run.unsubmitted(end.task_id, now)
            changes = self._on_ended([e for e in ended if e.status != MISSING])
            touched = {run.id for run, _ in changes}
            now = self.clock()
            changes += [
                (r, r.advance(now)) for r in list(self.runs.values()) if r.id not in touched
            ]
            await self._apply(changes)
        self._task = asyncio.create_task(self._loop())
        if unfinished:
            log.info("resumed %d workflow run(s)", len(unfinished))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ------------------------------------------------------------------ requests
    async def begin(self, run: Run) -> None:
        """Start a new run (its record is saved before its first task is submitted)."""
        async with self._lock:
            await self.ports.save([run])
            self._adopt(run)
            await self._apply([(run, run.advance(self.clock()))])

    async def cancel(self, run_id: str) -> Run | None:
        """Cancel an unfinished run (its running tasks are cancelled); None if not active."""
        async with self._lock:
            run = self.runs.get(run_id)
            if run is None:
                return None
            await self._apply([(run, run.cancel(self.clock()))])
            return run

    async def changed(self, run_id: str, timeout_s: float) -> None:
        """Wait until ``run_id`` changes (or ``timeout_s``)."""
        event = self._changed.setdefault(run_id, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    # ------------------------------------------------------------------ internals
    def _adopt(self, run: Run) -> None:
        self.runs[run.id] = run
        self._workflows[run.id] = parse_workflow(run.spec)
        for s in run.steps.values():
            if s.status == "running" and s.task_id:
                self._by_task[s.task_id] = run.id

    async def _loop(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("workflow engine step failed")
                await asyncio.sleep(IDLE_POLL_S)

    async def _step(self) -> None:
        """Hear of the running steps' ends (or wait for a retry to come due), then decide.

        The scheduler's feed is asked only for the tasks of running steps (all of them past
        ``FEED_IDS_SENT_MAX``); with none running it is not asked at all. A step registered
        while a poll is out (:meth:`_apply` wakes the loop) is polled for next time, and, if
        the poll came back meanwhile, its task read directly once: its end may lie before the
        cursor that poll moved."""
        timeout = self._next_retry_in()
        self._wake.clear()
        watched = None if len(self._by_task) > FEED_IDS_SENT_MAX else set(self._by_task)
        ended: list[TaskEnd] = []
        if not watched and watched is not None:  # nothing runs: every end from now is new
            self._cursor = max(self._cursor, self.ports.last_seq())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        else:
            ids = None if watched is None else list(watched)
            poll = asyncio.ensure_future(self.ports.next_ended(self._cursor, ids, timeout))
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({poll, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                if not poll.done():
                    poll.cancel()
            if poll.done() and not poll.cancelled():
                seq, ended = poll.result()
                self._cursor = max(self._cursor, seq)
            else:
                watched = None  # no poll came back: no direct reads needed
        async with self._lock:
            if watched is not None:
                late = [t for t in self._by_task if t not in watched]
                if late:
                    ended += [e for e in await self.ports.ended(late) if e.status != MISSING]
            changes = self._on_ended([e for e in ended if e.task_id in self._by_task])
            touched = {run.id for run, _ in changes}
            now = self.clock()
            for run in list(self.runs.values()):  # backoffs that are over
                due = any(
                    s.status == "pending" and s.retry_at is not None and s.retry_at <= now
                    for s in run.steps.values()
                )
                if due and run.id not in touched:
                    changes.append((run, run.advance(now)))
            if changes:
                await self._apply(changes)

    def _next_retry_in(self) -> float:
        due = [
            s.retry_at
            for run in self.runs.values()
            for s in run.steps.values()
            if s.status == "pending" and s.retry_at is not None
        ]
        if not due:
            return IDLE_POLL_S
        return max(0.0, min(IDLE_POLL_S, min(due) - self.clock()))

    def _on_ended(self, ended: Sequence[TaskEnd]) -> list[tuple[Run, Decision]]:
        """The runs' decisions for these ends (several ends of one run: one merged decision)."""
        out: dict[str, tuple[Run, Decision]] = {}
        for end in ended:
            run_id = self._by_task.pop(end.task_id, None)
            run = self.runs.get(run_id) if run_id else None
            if run is None:
                continue
            decision = run.task_ended(end.task_id, end.status, end.result, end.error, self.clock())
            if run.id in out:
                merged = out[run.id][1]
                merged.submit += [n for n in decision.submit if n not in merged.submit]
                merged.cancel += decision.cancel
                merged.events += decision.events
                decision = merged
            out[run.id] = (run, decision)
        return list(out.values())

    async def _apply(self, changes: Sequence[tuple[Run, Decision]]) -> None:
        """Carry out decisions: submit (one batch), then save, then announce."""
        now = self.clock()
        events: list[tuple[str, str, dict[str, Any]]] = []
        batches: list[tuple[Run, list[dict[str, Any]]]] = []
        for run, decision in changes:
            events += [(t, run.id, d) for t, d in decision.events]
            specs = self._specs(run, decision, now, events)
            if specs:
                batches.append((run, specs))
        await self._submit(batches, now, events)
        for _, decision in changes:
            for task_id in decision.cancel:
                with contextlib.suppress(Exception):
                    await self.ports.cancel(task_id)
        runs = list({run.id: run for run, _ in changes}.values())
        await self.ports.save(runs)
        if events:
            await self.ports.emit(events)
        for run in runs:
            if run.finished and not any(s.status == "running" for s in run.steps.values()):
                self.runs.pop(run.id, None)
                self._workflows.pop(run.id, None)
            self._changed.pop(run.id, asyncio.Event()).set()
        self._wake.set()  # steps started, or retries timed: the loop re-polls for them

    def _specs(
        self,
        run: Run,
        decision: Decision,
        now: float,
        events: list[tuple[str, str, dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """The task specs of the steps ``decision`` starts (marked running in ``run``)."""
        specs: list[dict[str, Any]] = []
        wf = self._workflows[run.id]
        results = run.results()
        for node_id in decision.submit:
            task_id = run.next_task_id(node_id)
            try:
                task = step_task(wf.node(node_id), run, results, slurm=self.slurm)
            except KeyError as e:  # a reference the results do not have
                more = run.step_failed(node_id, f"cannot build its task: {e}", now)
                events += [(t, run.id, d) for t, d in more.events]
                continue
            specs.append(
                {
                    "task_id": task_id,
                    "task_class": task.task_class,
                    "payload": task.payload,
                    "priority": task.priority,
                    "timeout_s": task.timeout_s,
                    "workflow_id": run.workflow_id,
                }
            )
            events.append(
                ("step_started", run.id, run.started(node_id, task_id, task.task_class, now))
            )
            self._by_task[task_id] = run.id
        return specs

    async def _submit(
        self,
        batches: list[tuple[Run, list[dict[str, Any]]]],
        now: float,
        events: list[tuple[str, str, dict[str, Any]]],
    ) -> None:
        """Admit every batch in one call; if that is refused, each run's on its own, so one
        run's bad step (a refused payload, a backend that is down) fails only that run."""
        if not batches:
            return
        if len(batches) > 1:
            try:
                await self.ports.submit([spec for _, specs in batches for spec in specs])
                return
            except (InvalidArgumentError, BackendUnavailableError):
                pass  # find the culprit: one run at a time
            except Exception:
                log.exception("submitting the steps of %d runs failed; trying again", len(batches))
                for run, specs in batches:
                    self._unsubmit(run, specs, now + RESUBMIT_AFTER_S)
                return
        for run, specs in batches:
            try:
                await self.ports.submit(specs)
            except (InvalidArgumentError, BackendUnavailableError) as e:  # the steps fail
                for spec in specs:
                    self._by_task.pop(spec["task_id"], None)
                    more = run.task_ended(
                        spec["task_id"], "failed", None, f"not admitted: {e}", now
                    )
                    events += [(t, run.id, d) for t, d in more.events]
            except Exception:  # the store or an actor in trouble: the same attempts, a bit later
                log.exception("submitting steps of run %s failed; trying again", run.id)
                self._unsubmit(run, specs, now + RESUBMIT_AFTER_S)

    def _unsubmit(self, run: Run, specs: list[dict[str, Any]], retry_at: float) -> None:
        for spec in specs:
            self._by_task.pop(spec["task_id"], None)
            run.unsubmitted(spec["task_id"], retry_at)

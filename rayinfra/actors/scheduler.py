"""The ``scheduler`` control actor: carries messages between its task state machine
(:class:`~rayinfra.scheduling.state.SchedulerState` makes every decision), the executors
(:class:`~rayinfra.actors.executor_pool.ExecutorPools`) and the state store. Tasks come in through
:class:`~rayinfra.admission.Submitter`s: its own, and other processes' (announced on the doorbell).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from typing import Any

from rayinfra import admission, doorbell, retention, taskstore
from rayinfra.actors.base import ControlActor
from rayinfra.actors.executor_pool import ExecutorPools
from rayinfra.actors.slurm_pool import SlurmGate, SlurmPool
from rayinfra.actors.task_started import StartedEvents
from rayinfra.errors import TaskNotFoundError
from rayinfra.models import StatusRows
from rayinfra.scheduling.filequeue import FileQueue
from rayinfra.scheduling.metrics import SchedulerMetrics
from rayinfra.scheduling.state import Batch, Results, SchedulerState, Settlement
from rayinfra.store import RawEvent
from rayinfra.taskstore import TaskRow

log = logging.getLogger(__name__)

DISPATCH_AFTER_ACK_S = 0.002
SWEEP_S = 2.0
RETIRE_IDLE_S = 5.0  # how often executors idle past their class's timeout are let go
TICK_S = 0.5
FEED_EVENTS = (*taskstore.TASK_EVENTS, "actor_started")  # what ``changes`` follows


class SchedulerActor(ControlActor):
    NAME = "scheduler"
    metrics: SchedulerMetrics

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self.state = SchedulerState(cfg.classes, cfg.scheduler)
        self.metrics = SchedulerMetrics(
            {c for c, k in cfg.classes.items() if k.num_gpus > 0 or c == admission.SLURM_CLASS}
        )
        self._wake = asyncio.Event()
        self.retention = retention.Retention(self.store, cfg)
        self._counts = taskstore.StatusCounts(self.store)
        self.slurm = SlurmPool(cfg, self.store, self.metrics, self._on_results, self._wake.set)
        self.submitter = admission.Submitter(
            self.store,
            cfg,
            wake=lambda admitted: self._enqueue(admitted.fresh_rows, admitted.seq),
            slurm=SlurmGate(cfg, self.slurm.probe),
        )
        self.file_queue = FileQueue(cfg.queue_dir)
        self.pools = ExecutorPools(
            cfg, self.store, self._on_results, self._executor_lost, self._wake.set
        )
        self.started = StartedEvents(self.store, lambda seq: self._events().advance(seq))
        self._sweep_cursor = self.store.last_event_seq()  # all submitted so far is recovered now
        rows = self.store.read(taskstore.load_unfinished)
        self.state.recover(rows, time.monotonic(), self.slurm.adopt(rows))
        self.slurm.start()
        log.info("scheduler recovered %d unfinished tasks", len(rows))
        self._bell = doorbell.Receiver(
            doorbell.address(cfg.state.db_path, self.NAME), self._catch_up
        )
        every = self.every
        self._tasks = [
            asyncio.create_task(coro)
            for coro in (
                self._dispatch_loop(),
                every(cfg.scheduler.queue_poll_interval_s, self._poll_files, "file queue poll"),
                every(cfg.state.purge_interval_s, self.retention.purge, "retention purge"),
                self.publishing_metrics(),
                every(RETIRE_IDLE_S, self._retire_idle, "retiring idle executors"),
                every(SWEEP_S, self._sweep, "sweep for committed tasks"),
            )
        ]

    async def submit(
        self, specs: list[dict[str, Any]], trusted: bool = True, source: str = ""
    ) -> list[dict[str, Any]]:
        """Validate, commit, then acknowledge a batch in the client's keys (all or nothing);
        raises InvalidArgumentError (field named), TaskConflictError, BackendUnavailableError."""
        return (await self.submitter.submit(specs, trusted=trusted, source=source)).replies()

    def _enqueue(self, rows: list[TaskRow], seq: int) -> None:
        """Queue committed rows (``seq``: the last event their commit wrote). The dispatcher
        wakes once a submit's reply is on its way (Ray serialises it on its own thread, which
        needs the GIL that an immediate dispatch would hold)."""
        self._events().advance(seq)
        self.metrics.submitted.inc(self.state.enqueue(rows, time.monotonic()))
        asyncio.get_running_loop().call_later(DISPATCH_AFTER_ACK_S, self._wake.set)

    async def _sweep(self) -> None:
        """The safety net behind the doorbell, every ``SWEEP_S``: a submitter can die between
        its commit and its ring, and a ring sent while no scheduler was bound (a restart, or a
        previous incarnation holding the doorbell's name) reaches nobody; the store has it."""
        self._bell.bind()
        self._catch_up()

    def _catch_up(self) -> None:
        """Queue every committed task not known here: each ``task_submitted`` event after the
        cursor names one (read with its row). Reads and queues without yielding, so a task that
        ended meanwhile (the state keeps it until its end is durable) is never queued twice."""
        for seq, rows in taskstore.read_submitted(self.store, self._sweep_cursor):
            self._sweep_cursor = seq
            self._enqueue([r for r in rows if r.task_id not in self.state], seq)

    def _pool(self, cls: str) -> ExecutorPools | SlurmPool:
        """Where the class's tasks run: Ray executors, or (``gpu_slurm``) Slurm jobs."""
        return self.slurm if cls == admission.SLURM_CLASS else self.pools

    async def slurm_job(self, task_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """A gpu_slurm task's latest job record (or None), waiting ``wait_s`` for one."""
        return await self.slurm.wait_record(task_id, wait_s)

    async def drain(self, timeout_s: float) -> dict[str, int]:
        """The runtime stops: nothing is dispatched any more, running attempts get ``timeout_s``
        to end, then what still runs is requeued as pending (durable: it runs on the next
        start) and cancelled where it runs. A Slurm job runs on; the next scheduler adopts it."""
        keep = {admission.SLURM_CLASS}
        self.state.draining, running = True, self.state.running(keep)
        deadline = time.monotonic() + timeout_s
        while self.state.running(keep) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        settled, cancel = self.state.drain(time.time(), keep)
        await self._settle(settled)
        for (cls, executor), ids in cancel.items():
            with contextlib.suppress(Exception):  # it is going away with the runtime anyway
                await self.pools.cancel(cls, executor, ids)
        return {"running": running, "requeued": len(settled.transitions)}

    async def resume(self) -> int:
        """Undo a drain whose stop did not follow (:meth:`SchedulerState.resume`)."""
        self._wake.set()
        return self.state.resume(time.monotonic())

    async def shutdown(self) -> bool:
        self.slurm.stop()
        self._bell.close()
        return await super().shutdown()

    def _live(self, task_id: str) -> TaskRow | None:
        info = self.state.tasks.get(task_id)
        return None if info is None else info.row

    async def get(self, task_ids: list[str], finished_only: bool = False) -> StatusRows:
        """Status rows by id (``None``: unknown; :func:`taskstore.statuses`) as the mapping the
        asker reads them through, which Ray pickles whole (:mod:`rayinfra.raywrap`)."""
        return StatusRows(await taskstore.statuses(self.store, task_ids, self._live, finished_only))

    async def list_tasks(
        self,
        status: str | None = None,
        task_class: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` tasks, newest first, each with its ``cursor``; ``after`` a
        cursor: the ones after it (:func:`rayinfra.taskstore.list_task_page`)."""
        return await taskstore.list_statuses(
            self.store, self._live, status, task_class, limit, after
        )

    async def cancel(self, task_id: str, wait_s: float = 10.0) -> dict[str, Any]:
        """Cancel a pending or running task (a running shell task loses its process group);
        waits up to ``wait_s`` for it to end. A finished task stays as it is."""
        if task_id not in self.state:
            self._catch_up()  # committed elsewhere; its ring may not be handled yet
        info = self.state.tasks.get(task_id)
        if info is not None:
            after = self._events().latest  # its end comes later: it is still in the state
            await self._settle(self.state.cancel(task_id, time.time()))  # unless it runs
            if info.executor is not None:  # it ends when its executor reports
                cls = info.row.spec.task_class
                await self._pool(cls).cancel(cls, info.executor, [task_id])
                await self.changes(after, [task_id], wait_s, terminal_only=True)
        found = (await self.get([task_id]))[task_id]
        if found is None:
            raise TaskNotFoundError(task_id)
        cancelled = info is not None and found.status == "cancelled"
        return {"task_id": task_id, "status": found.status, "cancelled": cancelled}

    async def changes(  # type: ignore[override]  # the task feed: event rows, not `changes`
        self,
        after_seq: int = 0,
        task_ids: Collection[str] | None = None,
        timeout_s: float = 30.0,
        terminal_only: bool = False,
    ) -> tuple[int, list[RawEvent]]:
        """Long-poll task state changes and this actor's restarts (``actor_started``) after
        ``after_seq``: ``(seq, event rows as stored)``, undecoded (:func:`taskstore.decode_change`
        decodes one). The feed is the events table: a caller resumes across restarts."""
        types = taskstore.TERMINAL_EVENTS if terminal_only else FEED_EVENTS
        ids = None if task_ids is None else [*task_ids, self.NAME]
        return await self.poll_event_rows(
            after_seq,
            types=types,
            resource_ids=ids,
            timeout_s=timeout_s,
            limit=5000,
            keep=lambda r: r[1] != "actor_started" or r[2] == self.NAME,  # not others' restarts
        )

    async def status(self) -> dict[str, Any]:
        counts, age = await self._counts.get()  # cached: counting a million rows takes ~50 ms
        return {
            "counts": counts,
            "counts_age_s": round(age, 3),
            "classes": {
                c: {**self.state.describe(c), "executors": self._pool(c).placement(c)}
                for c in sorted(self.config.classes)
            },
            "active": len(self.state),
            "store": self.store.stats(),
        }

    async def purge(self, older_than_s: float | None = None) -> dict[str, int]:
        """Purge what ended ``older_than_s`` ago (default: TTL): :mod:`rayinfra.retention`."""
        return await self.retention.purge(older_than_s)

    async def _retire_idle(self) -> None:
        self.pools.retire_idle(self.state.load)

    async def refresh_metrics(self) -> None:
        self.metrics.slurm_running.set(self.slurm.running())
        self.metrics.refresh(time.time(), *self.state.gauges(), self.file_queue.pending_files)

    async def _dispatch_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                await self._settle(self.state.fail_homeless(time.time()))
            except Exception:
                log.exception("failing tasks of classes not configured here failed")
            for cls in sorted(self.config.classes):
                try:
                    await self._dispatch_class(cls)
                except Exception:
                    log.exception("dispatch of class %s failed", cls)

    async def _dispatch_class(self, cls: str) -> None:
        state, pool = self.state, self._pool(cls)
        missing = broken = None
        if state.backlog(cls):
            missing = await pool.missing(cls)
            broken = None if missing else pool.take_error(cls)
        await self._settle(state.placement(cls, missing, broken, time.monotonic(), time.time()))
        if missing is None and state.backlog(cls):
            executors = await pool.ready(cls, state.backlog(cls), state.inflight[cls])
            for batch in state.dispatch(cls, executors, time.monotonic(), time.time()):
                self._send(batch)

    def _send(self, batch: Batch) -> None:
        self.metrics.on_dispatch(batch.task_class, batch.waited_s, time.time())
        self.started.dispatched(batch.started)
        self._pool(batch.task_class).send(batch.task_class, batch.executor, batch.items)

    async def _on_results(self, executor: str, results: Results) -> None:
        self._wake.set()  # their slots are free: the next batch goes out while they are written
        await self._settle(self.state.on_results(executor, results, time.time()))

    async def _executor_lost(self, executor: str, err: BaseException) -> None:
        error = f"executor died: {type(err).__name__}"
        await self._settle(self.state.executor_lost(executor, error, time.time()))
        self._wake.set()  # a new executor may take over the queue

    async def _settle(self, ended: Settlement) -> None:
        """Persist ``ended``; only then do finished tasks leave the state (so a catch-up cannot
        queue them again) and their files move, and do retries get timed."""
        if not ended.transitions:
            return
        now = time.time()
        seq = await taskstore.persist(self.store, ended.transitions, now)
        self._events().advance(seq)
        for row, _ in ended.finished:
            self.state.release(row.task_id)
        self.metrics.on_finish(ended.outcomes(), now)
        filed = [row for row, _ in ended.finished if row.source == "file"]
        if filed:  # file I/O stays off the event loop
            await asyncio.to_thread(self.file_queue.finished, filed)
        for task_id, backoff in ended.retries:
            asyncio.get_running_loop().call_later(backoff, self._requeue, task_id)
        self._wake.set()

    def _requeue(self, task_id: str) -> None:
        if self.state.requeue(task_id, time.monotonic()):
            self._wake.set()

    async def _poll_files(self) -> None:
        await self.file_queue.poll(self.submitter, self.store, self.state)

"""The ``scheduler`` control actor: durable queue, adaptive per-class dispatch, results, feeds.

A thin shell over plain logic: validation and identity (:mod:`rayinfra.scheduling.tasks`), the
priority queue with aging (:mod:`~rayinfra.scheduling.queue`), the adaptive limiter
(:mod:`~rayinfra.scheduling.limiter`), class feasibility (:mod:`~rayinfra.scheduling.classes`) and
the task SQL (:mod:`rayinfra.taskstore`).

Flow: ``submit`` validates a batch, commits it (rows + ``task_submitted`` events + feed changes in
one group-committed transaction) and only then acknowledges and queues it. A dispatch loop hands
each class's queue to that class's executor actors in batches, as far as the class's adaptive
limit allows; one long-poll per executor brings results back in batches, which are committed the
same way. On restart, pending tasks re-queue and running ones re-dispatch (at-least-once);
completed ones never run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from typing import Any

from rayinfra import admission, doorbell, raywrap, taskstore
from rayinfra.actors.base import ControlActor
from rayinfra.actors.executor import CANCELLED, INVALID, SUCCESS, TIMEOUT
from rayinfra.actors.executor_pool import Executor, ExecutorPools
from rayinfra.errors import BackendUnavailable, InvalidArgument, TaskNotFoundError
from rayinfra.scheduling import classes as class_logic
from rayinfra.scheduling.filequeue import FileQueue
from rayinfra.scheduling.limiter import AdaptiveLimiter, LimiterConfig, Outcome
from rayinfra.scheduling.metrics import SchedulerMetrics
from rayinfra.scheduling.queue import TaskQueue
from rayinfra.scheduling.tasks import TERMINAL_STATES, TaskSpec
from rayinfra.taskstore import TaskRow, Transition

log = logging.getLogger(__name__)

LOST_EXECUTOR_ATTEMPTS = 3
METRICS_PUBLISH_S = 5.0
DISPATCH_AFTER_ACK_S = 0.002
NODE_VIEW_TTL_S = 2.0
ADOPT_SWEEP_S = 2.0
ADOPT_SWEEP_BATCH = 5000
TICK_S = 0.5


@dataclass
class _Active:
    row: TaskRow
    queued_at: float  # monotonic, for queue-wait metrics
    executor: Executor | None = None
    cancel_requested: bool = False


class SchedulerActor(ControlActor):
    NAME = "scheduler"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self.task_classes = {name for name in cfg.classes}
        self.queues: dict[str, TaskQueue[str]] = {
            c: TaskQueue(cfg.scheduler.aging_interval_s) for c in self.task_classes
        }
        self.limiters = {
            c: AdaptiveLimiter(
                LimiterConfig(
                    initial_limit=k.initial_limit, min_limit=k.min_limit, max_limit=k.max_limit
                )
            )
            for c, k in cfg.classes.items()
        }
        self.inflight: dict[str, int] = dict.fromkeys(self.task_classes, 0)
        self.active: dict[str, _Active] = {}
        self.unsat_since: dict[str, float] = {}
        self._node_cache: tuple[float, list[class_logic.NodeView]] = (0.0, [])
        self.metrics = SchedulerMetrics(
            {c for c, k in cfg.classes.items() if k.num_gpus > 0 or c == admission.SLURM_CLASS}
        )
        self.file_queue = FileQueue(cfg.queue_dir)
        self._pending_files = 0  # queue_depth, counted by the file-queue loop's thread
        self._ray_metrics = raywrap.RayMetricsMirror()
        self._wake = asyncio.Event()
        self.pools = ExecutorPools(
            cfg, self.store, self._on_results, self._executor_lost, self._wake.set
        )
        self._terminal_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._orphans: list[_Active] = []
        # everything submitted up to here is recovered below; the sweep looks after it
        self._sweep_cursor = self.store.last_event_seq()
        self._recover()
        self._bell: socket.socket | None = None
        self._open_doorbell()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._dispatch_loop()),
            loop.create_task(self._file_queue_loop()),
            loop.create_task(self._retention_loop()),
            loop.create_task(self._metrics_loop()),
            loop.create_task(self._adopt_sweep_loop()),
        ]

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        now = time.monotonic()
        for row in self.store.read(taskstore.load_unfinished):
            # running when we died: run again (at-least-once); pending: queue again
            row.status = "pending"
            self.active[row.task_id] = _Active(row=row, queued_at=now)
            if row.spec.task_class not in self.queues:  # its class left the config
                self._orphans.append(self.active[row.task_id])
                continue
            self.queues[row.spec.task_class].push(row.task_id, row.spec.priority, row.task_id, now)
        if self.active:
            log.info("scheduler recovered %d unfinished tasks", len(self.active))

    # ------------------------------------------------------------------ submit
    async def submit(
        self, specs: list[dict[str, Any]], trusted: bool = True, source: str = ""
    ) -> list[dict[str, Any]]:
        """Validate, commit, then acknowledge a batch of tasks (all or nothing).

        Each spec uses the Python client's keys (``task_id, payload, task_class, priority,
        workflow_id, timeout_s``). Raises :class:`InvalidArgument` (field named, ``tasks[i].``
        prefixed for batches), :class:`TaskConflict` or :class:`BackendUnavailable`.
        """
        admitted = await admission.admit(
            self.store, self.config, specs, trusted=trusted, source=source
        )
        if admitted.seq:
            self._events().advance(admitted.seq)
        self._enqueue(admitted.fresh_rows)
        return admitted.replies()

    async def adopt(self, task_ids: list[str], seq: int = 0) -> int:
        """Queue tasks another actor (the gateway) committed; returns how many were new here.

        Fire-and-forget from the submitter's side: a lost call costs nothing, since a restart
        recovers every pending row anyway. The rows are read and queued without yielding, so a
        task that finished in between (it would be in ``active`` until its terminal state was
        committed) can never be queued twice.
        """
        if seq:
            self._events().advance(seq)
        return self._adopt_committed(task_ids)

    def _adopt_committed(self, task_ids: Collection[str]) -> int:
        unknown = [t for t in task_ids if t not in self.active]
        if not unknown:
            return 0
        rows = self.store.read(partial(taskstore.get_tasks, ids=unknown))
        fresh = [r for r in rows.values() if r.status == "pending" and r.task_id not in self.active]
        self._enqueue(fresh)
        return len(fresh)

    def _open_doorbell(self, *, quiet: bool = False) -> None:
        """Bind this runtime's scheduler doorbell (submitters ring it after committing). While
        another process holds the name (a previous incarnation still exiting) submitters fall
        back to ``adopt`` calls, and the sweep tries again."""
        try:
            self._bell = doorbell.open_receiver(
                doorbell.address(self.config.state.db_path, self.NAME)
            )
        except OSError as e:
            if not quiet:
                log.warning("scheduler doorbell busy (%s); submitters use adopt() meanwhile", e)
            self._bell = None
        if self._bell is not None:
            asyncio.get_running_loop().add_reader(self._bell.fileno(), self._on_ring)

    def _on_ring(self) -> None:
        assert self._bell is not None
        doorbell.drain(self._bell)
        try:
            self._catch_up()
        except Exception:
            log.exception("catching up with committed tasks failed")

    def _catch_up(self) -> None:
        """Queue every committed task not known here: each ``task_submitted`` event after the
        cursor names one. Runs on a doorbell ring and every ``ADOPT_SWEEP_S`` (for a gateway
        that died between its commit and its ring). Reads and queues without yielding (see
        :meth:`adopt`)."""
        while True:
            found = self.store.read(
                partial(
                    taskstore.submitted_after,
                    after_seq=self._sweep_cursor,
                    limit=ADOPT_SWEEP_BATCH,
                )
            )
            if not found:
                return
            self._sweep_cursor = found[-1][0]
            self._events().advance(self._sweep_cursor)
            unknown = [tid for _, tid in found if tid not in self.active]
            if unknown:
                self._adopt_committed(unknown)
            if len(found) < ADOPT_SWEEP_BATCH:
                return

    async def shutdown(self) -> bool:
        if self._bell is not None:
            asyncio.get_running_loop().remove_reader(self._bell.fileno())
            self._bell.close()
            self._bell = None
        return await super().shutdown()

    async def _adopt_sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(ADOPT_SWEEP_S)
            if self._bell is None and sys.platform.startswith("linux"):
                self._open_doorbell(quiet=True)
            try:
                self._catch_up()
            except Exception:
                log.exception("sweep for committed tasks failed")

    def _enqueue(self, rows: list[TaskRow]) -> None:
        """Queue committed rows not known here yet. A submit's rows can already be known: the
        catch-up may have read its commit while the submit was still awaiting it."""
        rows = [r for r in rows if r.task_id not in self.active]
        if not rows:
            return
        mono = time.monotonic()
        homeless = []
        for row in rows:
            act = _Active(row=row, queued_at=mono)
            self.active[row.task_id] = act
            if row.spec.task_class not in self.queues:  # admitted under another config
                homeless.append(act)
                continue
            self.queues[row.spec.task_class].push(row.task_id, row.spec.priority, row.task_id, mono)
            self.metrics.submitted.inc()
        if homeless:
            asyncio.get_running_loop().create_task(self._fail_homeless(homeless))
        # Wake the dispatcher only once this reply is on its way: Ray serialises the reply on
        # its own thread, which needs the GIL that an immediate dispatch would hold.
        asyncio.get_running_loop().call_later(DISPATCH_AFTER_ACK_S, self._wake.set)

    # ------------------------------------------------------------------ queries
    async def get(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Status dicts by id (``None`` for an unknown id)."""
        out: dict[str, dict[str, Any] | None] = {}
        missing = []
        for tid in task_ids:
            act = self.active.get(tid)
            if act is not None:
                out[tid] = act.row.status_dict()
            else:
                missing.append(tid)
        if missing:
            rows = await self.store.aread(partial(taskstore.get_tasks, ids=missing))
            for tid in missing:
                row = rows.get(tid)
                out[tid] = row.status_dict() if row else None
        return {tid: out[tid] for tid in task_ids}

    async def list_tasks(
        self, status: str | None = None, task_class: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        rows = await self.store.aread(
            partial(taskstore.list_tasks, status=status, task_class=task_class, limit=limit)
        )
        return [
            self.active[r.task_id].row.status_dict()
            if r.task_id in self.active
            else r.status_dict()
            for r in rows
        ]

    async def cancel(self, task_id: str, wait_s: float = 10.0) -> dict[str, Any]:
        """Cancel a pending or running task; a running shell task loses its whole process group."""
        if task_id not in self.active:
            self._adopt_committed([task_id])  # committed by the gateway, its adopt() not here yet
        act = self.active.get(task_id)
        if act is None:
            rows = await self.store.aread(partial(taskstore.get_tasks, ids=[task_id]))
            if task_id not in rows:
                raise TaskNotFoundError(task_id)
            return {"task_id": task_id, "status": rows[task_id].status, "cancelled": False}
        act.cancel_requested = True
        queue = self.queues[act.row.spec.task_class]
        if task_id in queue:
            queue.remove(task_id)
            await self._finish([(act, "cancelled", None, "cancelled", CANCELLED)])
            return {"task_id": task_id, "status": "cancelled", "cancelled": True}
        waiter = asyncio.get_running_loop().create_future()
        self._terminal_waiters.setdefault(task_id, []).append(waiter)
        if act.executor is not None:
            with contextlib.suppress(*raywrap.actor_errors()):
                await act.executor.handle.cancel.remote([task_id])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(waiter, wait_s)
        status = (await self.get([task_id]))[task_id]
        state = status["status"] if status else "unknown"
        return {"task_id": task_id, "status": state, "cancelled": state == "cancelled"}

    async def changes(
        self,
        after_seq: int = 0,
        task_ids: Collection[str] | None = None,
        timeout_s: float = 30.0,
        terminal_only: bool = False,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Long-poll task state changes after ``after_seq``: ``(seq, changes)``.

        Each change is ``{seq, key (task id), kind: "state", data: {status, ...}}``; a finished
        task's data carries ``result``, ``error``, ``started_at``, ``finished_at``. This
        actor's own restarts appear as ``kind: "lifecycle"``. The feed is the events table, so a
        caller resumes from its last ``seq`` across scheduler restarts.
        """
        types: tuple[str, ...] = (
            taskstore.TERMINAL_EVENTS
            if terminal_only
            else (*taskstore.TASK_EVENTS, "actor_started")
        )
        ids = None if task_ids is None else [*task_ids, self.NAME]
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            seq, rows = await self.poll_events(
                after_seq,
                types=types,
                resource_ids=ids,
                timeout_s=max(0.0, deadline - time.monotonic()),
                limit=5000,
            )
            # other actors' restarts share the event type; they are not this feed's business
            changes = [
                taskstore.change_from_event(e)
                for e in rows
                if e.event_type != "actor_started" or e.resource_id == self.NAME
            ]
            if changes or not rows or time.monotonic() >= deadline:
                return seq, changes
            after_seq = seq

    async def status(self) -> dict[str, Any]:
        counts = await self.store.aread(taskstore.count_by_status)
        return {
            "counts": counts,
            "classes": {
                c: {
                    "pending": len(self.queues[c]),
                    "inflight": self.inflight[c],
                    "limit": self.limiters[c].limit,
                    "executors": self.pools.names(c),
                    "unschedulable_since": self.unsat_since.get(c),
                }
                for c in sorted(self.task_classes)
            },
            "active": len(self.active),
            "store": self.store.stats(),
        }

    async def metrics_snapshot(self) -> dict[str, float]:
        self._refresh_metrics()
        return self.metrics.snapshot()

    async def metrics_text(self) -> bytes:
        self._refresh_metrics()
        return self.metrics.text()

    async def purge(self, older_than_s: float | None = None) -> dict[str, int]:
        """Delete finished tasks, events and changes older than ``older_than_s`` (default: TTL)."""
        age = self.config.state.result_ttl_s if older_than_s is None else older_than_s
        return await self.store.awrite(
            partial(taskstore.purge_finished, older_than=time.time() - age)
        )

    def _refresh_metrics(self) -> None:
        self.metrics.refresh(
            time.time(),
            {c: len(q) for c, q in self.queues.items()},
            dict(self.inflight),
            {c: lim.limit for c, lim in self.limiters.items()},
            self._pending_files,
        )

    # ------------------------------------------------------------------ dispatch
    async def _fail_homeless(self, acts: list[_Active]) -> None:
        """Fail tasks whose class this scheduler does not run (it left the config)."""
        await self._finish(
            [
                (
                    a,
                    "failed",
                    None,
                    f"task class {a.row.spec.task_class!r} is no longer configured",
                    INVALID,
                )
                for a in acts
            ]
        )

    async def _dispatch_loop(self) -> None:
        if self._orphans:
            orphans, self._orphans = self._orphans, []
            await self._fail_homeless(orphans)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            for cls in sorted(self.task_classes):
                try:
                    await self._dispatch_class(cls)
                except Exception:
                    log.exception("dispatch of class %s failed", cls)

    async def _nodes(self) -> list[class_logic.NodeView]:
        at, nodes = self._node_cache
        if time.monotonic() - at > NODE_VIEW_TTL_S:
            raw = await asyncio.to_thread(raywrap.node_views)
            nodes = [class_logic.NodeView(n["node_id"], n["resources"], n["labels"]) for n in raw]
            self._node_cache = (time.monotonic(), nodes)
        return nodes

    async def _dispatch_class(self, cls: str) -> None:
        queue = self.queues[cls]
        if not queue:
            self.unsat_since.pop(cls, None)
            return
        klass = self.config.classes[cls]
        reason = class_logic.unsatisfiable_reason(
            cls, class_logic.resource_request(klass), klass.label_selector, await self._nodes()
        )
        if reason is not None:
            first = self.unsat_since.setdefault(cls, time.monotonic())
            if time.monotonic() - first >= self.config.scheduler.unschedulable_timeout_s:
                await self._fail_queue(cls, reason, "unschedulable")
                self.unsat_since.pop(cls, None)
            return
        self.unsat_since.pop(cls, None)
        error = self.pools.take_error(cls)
        if error is not None:
            await self._fail_queue(cls, error, "executor")
            return
        executors = await self.pools.ready(cls, len(queue), self.inflight[cls])
        if not executors:
            return
        limiter = self.limiters[cls]
        slots = klass.slots
        batch_size = self.config.scheduler.batch_size
        while queue:
            room = limiter.available(self.inflight[cls])
            if slots is not None:  # bounded by the executors Ray could place
                room = min(room, sum(max(0, slots - len(e.tasks)) for e in executors))
            if room <= 0:
                break
            target = min(executors, key=lambda e: len(e.tasks))
            take = min(room, batch_size)
            if slots is not None:
                take = min(take, slots - len(target.tasks))
            picked = queue.pop_batch(take, time.monotonic())
            await self._send(cls, target, [self.active[tid] for tid, _ in picked])

    async def _fail_queue(self, cls: str, error: str, reason: str) -> None:
        """Fail everything queued for ``cls`` with ``error`` (a class that cannot run)."""
        queue = self.queues[cls]
        doomed = [self.active[tid] for tid, _ in queue.pop_batch(len(queue), time.monotonic())]
        await self._finish([(a, "failed", None, error, reason) for a in doomed])

    async def _send(self, cls: str, target: Executor, batch: list[_Active]) -> None:
        now = time.time()
        mono = time.monotonic()
        items = []
        transitions = []
        for act in batch:
            row = act.row
            row.status = "running"
            row.attempts += 1
            row.started_at = now
            act.executor = target
            target.tasks.add(row.task_id)
            target.busy_at = mono
            self.metrics.on_dispatch(cls, mono - act.queued_at, now)
            timeout = row.spec.timeout_s or self.config.classes[cls].timeout_s
            item = {
                "task_id": row.task_id,
                "payload": row.spec.payload,
                "timeout_s": timeout,
                "attempt": row.attempts,
            }
            if row.spec.runtime_env:
                item["runtime_env"] = class_logic.merge_runtime_env(
                    self.config.classes[cls].runtime_env, row.spec.runtime_env
                )
            items.append(item)
            transitions.append(Transition(row, "task_started", {"attempt": row.attempts}))
        self.inflight[cls] += len(batch)
        # ordered behind earlier writes by the single writer; no need to hold the batch for it
        fut = self.store.submit(
            partial(
                taskstore.apply_transitions, transitions=transitions, now=now, update_rows=False
            )
        )
        fut.add_done_callback(
            partial(_notify_from_thread, asyncio.get_running_loop(), self._events().advance)
        )
        # fire and forget: calls from one caller reach an actor in order, and a dead executor
        # is noticed by its result poller, which fails over everything it held
        target.handle.submit.remote(items)

    async def _executor_lost(self, cls: str, ex: Executor, err: BaseException) -> None:
        """The pool lost ``ex``: what it was running fails over (and re-runs, see _finish)."""
        lost = [self.active[t] for t in ex.tasks if t in self.active]
        ex.tasks.clear()
        if lost:
            log.warning("executor %s lost with %d tasks: %s", ex.name, len(lost), err)
            await self._finish(
                [
                    (a, "failed", None, f"executor died: {type(err).__name__}", "resource")
                    for a in lost
                ]
            )
        self._wake.set()

    async def _on_results(self, cls: str, ex: Executor, results: list[dict[str, Any]]) -> None:
        finished = []
        limiter = self.limiters[cls]
        for r in results:
            ex.tasks.discard(r["task_id"])
            act = self.active.get(r["task_id"])
            if act is None or act.executor is not ex:
                continue  # a stale report (task already finished elsewhere)
            outcome = {SUCCESS: Outcome.SUCCESS, TIMEOUT: Outcome.TIMEOUT}.get(
                r["outcome"], Outcome.FAILURE
            )
            if r["outcome"] != CANCELLED:
                limiter.on_sample(r["latency_s"], self.inflight[cls], outcome)
            act.row.started_at = r["started_at"]
            finished.append(
                (act, r["status"], r["result"], r["error"], r["outcome"], r["finished_at"])
            )
        await self._finish(finished)

    async def _finish(self, items: list[tuple[Any, ...]]) -> None:
        """Terminal (or retry) transitions for tasks leaving the running/pending state."""
        if not items:
            return
        now = time.time()
        transitions = []
        requeue = []
        for item in items:
            act, status, result, error, reason = item[:5]
            finished_at = item[5] if len(item) > 5 else now
            row = act.row
            cls = row.spec.task_class
            if act.executor is not None:
                self.inflight[cls] = max(0, self.inflight[cls] - 1)
                act.executor.tasks.discard(row.task_id)
                act.executor = None
                if reason == "resource":
                    self.limiters[cls].on_sample(0.0, self.inflight[cls], Outcome.RESOURCE)
            klass = self.config.classes.get(cls)  # None: the class left the config
            max_attempts = klass.max_attempts if klass is not None else 1
            # at-least-once: a task whose executor died runs again (within a small budget, so
            # a task that kills its worker every time still ends), on top of the class's policy
            budget = (
                max(max_attempts, LOST_EXECUTOR_ATTEMPTS) if reason == "resource" else max_attempts
            )
            retryable = (
                status == "failed"
                and reason not in (INVALID, "unschedulable", "executor")
                and not act.cancel_requested
                and row.attempts < budget
            )
            if retryable and klass is not None:
                backoff = min(
                    klass.retry_backoff_max_s, klass.retry_backoff_s * 2 ** (row.attempts - 1)
                )
                row.status = "pending"
                row.error = error
                transitions.append(
                    Transition(
                        row,
                        "task_retrying",
                        {"error": error, "attempt": row.attempts, "backoff_s": backoff},
                    )
                )
                requeue.append((act, backoff))
                continue
            row.status = status
            row.result = result
            row.error = error or ""
            row.finished_at = finished_at
            event = {"completed": "task_completed", "cancelled": "task_cancelled"}.get(
                status, "task_failed"
            )
            data: dict[str, Any] = {"attempts": row.attempts}
            if row.error:
                data["error"] = row.error
            if row.started_at:
                data["duration_ms"] = round((finished_at - row.started_at) * 1000, 3)
            transitions.append(Transition(row, event, data))
            self.metrics.on_finish(cls, status, reason, now)
        seq = await self.store.awrite(
            partial(taskstore.apply_transitions, transitions=transitions, now=now)
        )
        if seq:
            self._events().advance(seq)
        filed = []
        for t in transitions:
            if t.row.status in TERMINAL_STATES:
                self.active.pop(t.row.task_id, None)
                for w in self._terminal_waiters.pop(t.row.task_id, []):
                    if not w.done():
                        w.set_result(None)
                if t.row.source == "file":
                    filed.append((t.row.task_id, t.row.status_dict(), t.row.spec))
        if filed:  # file I/O stays off the event loop
            await asyncio.to_thread(self._file_finished, filed)
        for act, backoff in requeue:
            asyncio.get_running_loop().call_later(backoff, self._requeue, act)
        self._wake.set()

    def _file_finished(self, filed: list[tuple[str, dict[str, Any], TaskSpec]]) -> None:
        for task_id, status, spec in filed:
            self.file_queue.finish(task_id, status, spec)

    def _requeue(self, act: _Active) -> None:
        row = act.row
        if row.task_id not in self.active or act.cancel_requested:
            return
        act.queued_at = time.monotonic()
        self.queues[row.spec.task_class].push(
            row.task_id, row.spec.priority, row.task_id, act.queued_at
        )
        self._wake.set()

    # ------------------------------------------------------------------ file queue, retention
    async def _file_queue_loop(self) -> None:
        while True:
            try:
                claimed = await asyncio.to_thread(self.file_queue.claim)
                for envelope in claimed:
                    try:
                        await self.submit([envelope], trusted=True, source="file")
                    except (InvalidArgument, BackendUnavailable) as e:
                        await asyncio.to_thread(self.file_queue.reject, envelope["task_id"], str(e))
                await asyncio.to_thread(self._reconcile_file_locks)
                self._pending_files = await asyncio.to_thread(self.file_queue.pending_count)
            except Exception:
                log.exception("file queue poll failed")
            await asyncio.sleep(self.config.scheduler.queue_poll_interval_s)

    def _reconcile_file_locks(self) -> None:
        """Lock files whose task already finished (e.g. before a restart) get moved now."""
        locked = self.file_queue.locked_ids()
        stale = [t for t in locked if t not in self.active]
        if not stale:
            return
        rows = self.store.read(partial(taskstore.get_tasks, ids=stale))
        for tid, row in rows.items():
            if row.status in TERMINAL_STATES:
                self.file_queue.finish(tid, row.status_dict(), row.spec)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(METRICS_PUBLISH_S)
            try:
                self.pools.retire_idle()
                self._refresh_metrics()
                self._ray_metrics.publish(self.metrics.snapshot())
            except Exception:
                log.exception("publishing metrics to Ray failed")

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(3600.0)
            try:
                await self.purge()
            except Exception:
                log.exception("retention purge failed")


def _notify_from_thread(loop: asyncio.AbstractEventLoop, notify: Any, fut: Any) -> None:
    if fut.exception() is not None:
        log.error("persisting task_started failed: %s", fut.exception())
        return
    seq = fut.result()
    if seq:
        loop.call_soon_threadsafe(notify, seq)

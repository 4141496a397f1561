"""The scheduler's task state machine: every decision about a task, none of the I/O.

Shaped like Ray Serve's ``DeploymentState``: the ``scheduler`` actor tells
:class:`SchedulerState` what happened (rows committed or recovered, results, a lost executor,
a cancel request, whether any node can place a class) and carries out what it decides:
:class:`Batch` es to send to executors and :class:`Settlement` s to persist. No Ray, asyncio or
store import, and every clock value is an argument (``mono``: monotonic, for queue order and
waits; ``now``: unix time, for what is stored), so unit tests drive it with plain numbers.

A task (:class:`TaskInfo`)::

    pending, queued --dispatch--> running on an executor --result--> completed | failed | cancelled
          ^                                     |
          +---- pending, after a backoff <------+  (a retryable outcome within the attempt budget)

A task leaves the state only once its end is durable (:meth:`SchedulerState.release`): until
then a catch-up that reads its ``task_submitted`` event finds it here and does not queue it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rayinfra.config import ClassConfig, SchedulerSection
from rayinfra.json_encode import loads_stored
from rayinfra.scheduling.classes import merge_runtime_env
from rayinfra.scheduling.limiter import AdaptiveLimiter, LimiterConfig, Outcome
from rayinfra.scheduling.queue import TaskQueue
from rayinfra.taskstore import TaskRow, Transition

__all__ = [
    "LOST_EXECUTOR_ATTEMPTS",
    "RETRYABLE",
    "Batch",
    "Dispatch",
    "Results",
    "ResultsCallback",
    "SchedulerState",
    "Settlement",
    "TaskInfo",
    "TaskResult",
    "payload_of",
]

LOST_EXECUTOR_ATTEMPTS = 3
"""Attempts a task gets when its executor dies under it (at-least-once), even in a class with
fewer ``max_attempts``; bounded, so a task that kills its worker every time still ends."""
DRAINED = "the runtime stopped before this attempt ended; it runs again on the next start"
RETRYABLE = frozenset({Outcome.FAILURE, Outcome.TIMEOUT, Outcome.RESOURCE})
"""Outcomes worth another attempt; a cancel request rules any retry out."""

_STATUS = {Outcome.SUCCESS: "completed", Outcome.CANCELLED: "cancelled"}  # others: failed
_EVENT = {"completed": "task_completed", "failed": "task_failed", "cancelled": "task_cancelled"}


class TaskResult(NamedTuple):
    """How one attempt ended: reported by an executor, or decided here for a task that did not
    run (cancelled, unschedulable, its executor lost). Times are unix seconds. A named tuple:
    executors reply with its plain-tuple form (a class instance crosses Ray through
    cloudpickle's reducer, item by item), which :meth:`SchedulerState.on_results` reads back."""

    task_id: str
    outcome: Outcome
    error: str = ""
    result: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    latency_s: float = 0.0

    @property
    def status(self) -> str:
        return _STATUS.get(self.outcome, "failed")


#: what an executor reports: results, or their plain tuples (its replies' form)
Results = Sequence[TaskResult | tuple[Any, ...]]
#: how a pool hands what an executor reported to the scheduler: ``(executor name, results)``
ResultsCallback = Callable[[str, Results], Awaitable[None]]


@dataclass(slots=True)
class TaskInfo:
    """A task the scheduler answers for, from commit until its end is durable."""

    row: TaskRow
    queued_at: float  # monotonic: queue-wait metrics
    executor: str | None = None  # the executor running it
    cancel_requested: bool = False


class Dispatch(NamedTuple):
    """One task handed to an executor: what its ``submit`` takes. A batch carries them as
    plain tuples of these fields (``Dispatch._make(item)`` reads one): ~1/3 of a dict's
    pickling, and a named tuple would pickle through cloudpickle's reducer item by item.
    ``payload`` is the payload's compact JSON when the scheduler has it (the text read back
    from the store: decoded once, by the executor), else the payload (:func:`payload_of`)."""

    task_id: str
    payload: dict[str, Any] | str
    timeout_s: float | None
    attempt: int
    runtime_env: dict[str, Any] | None = None


def payload_of(sent: dict[str, Any] | str) -> dict[str, Any]:
    """A :class:`Dispatch`'s payload as the object, whichever form it was sent in."""
    return loads_stored(sent) if isinstance(sent, str) else sent


@dataclass
class Batch:
    """Tasks to send to one executor (``items``: what its ``submit`` takes, :class:`Dispatch`
    fields as plain tuples), each attempt started (``started``: row and attempt number, whose
    ``task_started`` is written if it still runs a moment later) and how long each task
    waited in the queue."""

    task_class: str
    executor: str
    items: list[tuple[Any, ...]] = field(default_factory=list)
    started: list[tuple[TaskRow, int]] = field(default_factory=list)
    waited_s: list[float] = field(default_factory=list)


@dataclass
class Settlement:
    """Tasks leaving an attempt: ``transitions`` to persist in one write; once it is durable,
    ``finished`` tasks (with their outcome) are released and ``retries`` (task id, backoff
    seconds) requeued after their delay."""

    transitions: list[Transition] = field(default_factory=list)
    finished: list[tuple[TaskRow, Outcome]] = field(default_factory=list)
    retries: list[tuple[str, float]] = field(default_factory=list)

    def outcomes(self) -> list[tuple[str, str, str]]:
        """``(class, status, reason)`` of each finished task: what the metrics count."""
        return [(row.spec.task_class, row.status, outcome.value) for row, outcome in self.finished]


class SchedulerState:
    """Queues, limits, slots and retries of every task class; the tasks not yet finished."""

    def __init__(self, classes: Mapping[str, ClassConfig], settings: SchedulerSection) -> None:
        self.classes = dict(classes)
        self.settings = settings
        self.tasks: dict[str, TaskInfo] = {}
        self.queues: dict[str, TaskQueue[str]] = {
            c: TaskQueue(settings.aging_interval_s) for c in classes
        }
        self.limiters = {
            c: AdaptiveLimiter(
                LimiterConfig(
                    initial_limit=k.initial_limit, min_limit=k.min_limit, max_limit=k.max_limit
                )
            )
            for c, k in classes.items()
        }
        self.inflight = dict.fromkeys(classes, 0)
        self.unsat_since: dict[str, float] = {}  # class -> when no node could place it (mono)
        self._running: dict[str, set[str]] = {}  # executor -> ids of the tasks it runs
        self._homeless: list[TaskInfo] = []  # of a class not configured here, to fail
        self.draining = False  # the runtime is stopping: nothing is dispatched any more
        self._drained: list[str] = []  # handed back by the drain: queued again by a resume

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def __len__(self) -> int:
        return len(self.tasks)

    # ------------------------------------------------------------------ reading
    def backlog(self, cls: str) -> int:
        """Tasks of ``cls`` waiting in its queue."""
        return len(self.queues[cls])

    def load(self, executor: str) -> int:
        """Tasks running on ``executor``."""
        return len(self._running.get(executor, ()))

    def describe(self, cls: str) -> dict[str, Any]:
        return {
            "pending": self.backlog(cls),
            "inflight": self.inflight[cls],
            "limit": self.limiters[cls].limit,
            "unschedulable_since": self.unsat_since.get(cls),
        }

    def gauges(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Per class: queued, in flight, limit (the scheduler's metrics)."""
        return (
            {c: len(q) for c, q in self.queues.items()},
            dict(self.inflight),
            {c: lim.limit for c, lim in self.limiters.items()},
        )

    # ------------------------------------------------------------------ tasks coming in
    def enqueue(self, rows: Iterable[TaskRow], mono: float) -> int:
        """Queue committed pending rows not known here; returns how many were queued. A
        submit's rows may be known already: a catch-up can read its commit while the submit
        still awaits it. A row of a class not configured here (admitted under another config)
        waits for :meth:`fail_homeless`."""
        queued = 0
        for row in rows:
            if row.task_id in self.tasks or row.status != "pending":
                continue
            info = self.tasks[row.task_id] = TaskInfo(row, mono)
            queue = self.queues.get(row.spec.task_class)
            if queue is None:
                self._homeless.append(info)
                continue
            queue.push(row.task_id, row.spec.priority, row.task_id, mono)
            queued += 1
        return queued

    def recover(
        self, rows: Sequence[TaskRow], mono: float, adopted: Mapping[str, str] | None = None
    ) -> None:
        """Rows left unfinished by the previous incarnation: pending ones queue again, running
        ones too (at-least-once: their executor went with it), except those in ``adopted``
        (task id -> executor): their attempt outlived the scheduler (a Slurm job) and goes on
        running there, in the class's in-flight count."""
        adopted = adopted or {}
        for row in rows:
            executor = adopted.get(row.task_id)
            known = row.task_id in self.tasks or row.spec.task_class not in self.inflight
            if executor is not None and row.status == "running" and not known:
                self.tasks[row.task_id] = TaskInfo(row, mono, executor=executor)
                self._running.setdefault(executor, set()).add(row.task_id)
                self.inflight[row.spec.task_class] += 1
                continue
            row.status = "pending"
        self.enqueue(rows, mono)

    def fail_homeless(self, now: float) -> Settlement:
        """Fail the tasks whose class is not configured here (unless cancelled meanwhile)."""
        ended = []
        for info in self._homeless:
            if info.row.status == "pending":
                error = f"task class {info.row.spec.task_class!r} is no longer configured"
                ended.append((info, TaskResult(info.row.task_id, Outcome.INVALID, error)))
        self._homeless = []
        return self._end(ended, now)

    def requeue(self, task_id: str, mono: float) -> bool:
        """Queue a task again once its retry backoff is over (unless it ended meanwhile)."""
        info = self.tasks.get(task_id)
        if info is None or info.row.status != "pending":
            return False
        info.queued_at = mono
        self.queues[info.row.spec.task_class].push(task_id, info.row.spec.priority, task_id, mono)
        return True

    def release(self, task_id: str) -> None:
        """Forget a task whose end is durable."""
        self.tasks.pop(task_id, None)

    # ------------------------------------------------------------------ dispatch
    def placement(
        self, cls: str, missing: str | None, broken: str | None, mono: float, now: float
    ) -> Settlement:
        """Whether ``cls`` can run: ``missing`` is why no node can place it, ``broken`` why its
        executors cannot start (``None``: no such problem). Broken fails the class's queue at
        once. Ray would leave unplaceable tasks pending forever, so once no node could place
        the class for ``unschedulable_timeout_s`` its queue fails, naming what is missing."""
        if broken is not None:
            return self._fail_queue(cls, broken, Outcome.EXECUTOR, mono, now)
        if missing is None or not self.queues[cls]:
            self.unsat_since.pop(cls, None)
            return Settlement()
        since = self.unsat_since.setdefault(cls, mono)
        if mono - since < self.settings.unschedulable_timeout_s:
            return Settlement()
        del self.unsat_since[cls]
        return self._fail_queue(cls, missing, Outcome.UNSCHEDULABLE, mono, now)

    def _fail_queue(
        self, cls: str, error: str, outcome: Outcome, mono: float, now: float
    ) -> Settlement:
        queue = self.queues[cls]
        doomed = [self.tasks[t] for t, _ in queue.pop_batch(len(queue), mono)]
        return self._end_all(doomed, outcome, error, now)

    def dispatch(self, cls: str, executors: Sequence[str], mono: float, now: float) -> list[Batch]:
        """Hand queued tasks of ``cls`` to its ready ``executors``, least loaded first, in
        batches of ``batch_size`` or, with a longer queue, the queue's share per executor, as
        far as the class's adaptive limit allows and, for a class with ``slots`` (one GPU per
        task...), the executors' free slots."""
        queue, limiter = self.queues[cls], self.limiters[cls]
        slots = self.classes[cls].slots
        batches = []
        while queue and executors and not self.draining:
            room = limiter.available(self.inflight[cls])
            if slots is not None:
                room = min(room, sum(max(0, slots - self.load(e)) for e in executors))
            if room <= 0:
                break
            target = min(executors, key=self.load)
            # sized by the queue: a long one goes in fewer, bigger calls (its share per executor)
            take = min(room, max(self.settings.batch_size, -(-len(queue) // len(executors))))
            if slots is not None:
                take = min(take, slots - self.load(target))
            picked = [self.tasks[t] for t, _ in queue.pop_batch(take, mono)]
            batches.append(self._start(cls, target, picked, mono, now))
        return batches

    def _start(
        self, cls: str, executor: str, infos: list[TaskInfo], mono: float, now: float
    ) -> Batch:
        klass = self.classes[cls]
        batch = Batch(cls, executor)
        running = self._running.setdefault(executor, set())
        for info in infos:
            row = info.row
            row.status, row.started_at = "running", now
            row.attempts += 1
            info.executor = executor
            running.add(row.task_id)
            env = row.spec.runtime_env
            batch.items.append(
                (  # a Dispatch's fields
                    row.task_id,
                    row.spec.payload_json or row.spec.payload,
                    row.spec.timeout_s or klass.timeout_s,
                    row.attempts,
                    merge_runtime_env(klass.runtime_env, env) if env else None,
                )
            )
            batch.started.append((row, row.attempts))
            batch.waited_s.append(mono - info.queued_at)
        self.inflight[cls] += len(infos)
        return batch

    # ------------------------------------------------------------------ attempts ending
    def on_results(self, executor: str, results: Results, now: float) -> Settlement:
        """What ``executor`` reports (:class:`TaskResult` s, or their plain tuples as executors
        send them); a result for a task no longer running there (it ended some other way
        meanwhile) is stale and ignored."""
        ended = []
        for res in map(TaskResult._make, results):
            info = self.tasks.get(res.task_id)
            if info is not None and info.executor == executor:
                info.row.started_at = res.started_at or info.row.started_at  # the real start
                ended.append((info, res))
        return self._end(ended, now)

    def executor_lost(self, executor: str, error: str, now: float) -> Settlement:
        """``executor`` died: what it ran fails over as ``RESOURCE`` (and runs again)."""
        lost = [self.tasks[t] for t in sorted(self._running.pop(executor, ()))]
        return self._end_all(lost, Outcome.RESOURCE, error, now)

    def cancel(self, task_id: str, now: float) -> Settlement:
        """Note a cancel request for a known task. One that is not running (queued, or waiting
        out a retry backoff) ends cancelled here; a running one ends when its executor reports,
        and the caller must tell that executor (``tasks[task_id].executor``)."""
        info = self.tasks[task_id]
        info.cancel_requested = True
        if info.executor is not None or info.row.status != "pending":
            return Settlement()
        queue = self.queues.get(info.row.spec.task_class)
        if queue is not None:  # else homeless
            queue.remove(task_id)
        return self._end_all([info], Outcome.CANCELLED, "cancelled", now)

    def _end_all(
        self, infos: list[TaskInfo], outcome: Outcome, error: str, now: float
    ) -> Settlement:
        """End attempts (or tasks that never ran) for one reason."""
        return self._end([(i, TaskResult(i.row.task_id, outcome, error)) for i in infos], now)

    def _end(self, ended: list[tuple[TaskInfo, TaskResult]], now: float) -> Settlement:
        """Attempts over: free their executors' slots, then retry or finish each task."""
        for info, res in ended:  # every sample sees the in-flight count from before this batch
            if info.executor is not None and res.outcome is not Outcome.CANCELLED:
                cls = info.row.spec.task_class
                self.limiters[cls].record(res.latency_s, self.inflight[cls], res.outcome)
        out = Settlement()
        for info, res in ended:
            self._unassign(info)
            row = info.row
            backoff = self._retry_backoff(info, res.outcome)
            if backoff is not None:
                row.status, row.error = "pending", res.error
                data = {"error": res.error, "attempt": row.attempts, "backoff_s": backoff}
                out.transitions.append(Transition(row, "task_retrying", data))
                out.retries.append((row.task_id, backoff))
                continue
            row.status, row.result, row.error = res.status, res.result, res.error
            row.finished_at = now if res.finished_at is None else res.finished_at
            event: dict[str, Any] = {"attempts": row.attempts}
            if row.error:
                event["error"] = row.error
            if row.started_at:
                event["duration_ms"] = round((row.finished_at - row.started_at) * 1000, 3)
            out.transitions.append(Transition(row, _EVENT[row.status], event))
            out.finished.append((row, res.outcome))
        return out

    def running(self, keep: Collection[str] = ()) -> int:
        """Attempts running now, of classes not in ``keep``."""
        return sum(
            1
            for ids in self._running.values()
            for t in ids
            if self.tasks[t].row.spec.task_class not in keep
        )

    def drain(
        self, now: float, keep: Collection[str] = ()
    ) -> tuple[Settlement, dict[tuple[str, str], list[str]]]:
        """The runtime stops: nothing is dispatched any more, and every attempt still running,
        except of the classes in ``keep`` (attempts that outlive the runtime: Slurm jobs), is
        handed back as pending: ``task_retrying`` with reason :data:`DRAINED`, the attempt not
        counted against the task's retries. Returns that, and ``(class, executor) -> task ids``
        to cancel where they run."""
        self.draining = True
        out, cancel = Settlement(), dict[tuple[str, str], list[str]]()
        for executor, ids in list(self._running.items()):
            for tid in sorted(ids):
                info = self.tasks[tid]
                row = info.row
                if row.spec.task_class in keep:
                    continue
                cancel.setdefault((row.spec.task_class, executor), []).append(tid)
                self._unassign(info)
                row.status, row.started_at, row.attempts = "pending", None, row.attempts - 1
                data = {"error": DRAINED, "attempt": row.attempts, "backoff_s": 0.0}
                out.transitions.append(Transition(row, "task_retrying", data))
                self._drained.append(tid)
        return out, cancel

    def resume(self, mono: float) -> int:
        """The stop that drained did not happen (it failed, or was given up): dispatch again,
        the attempts the drain handed back queued first. How many were queued again."""
        self.draining = False
        drained, self._drained = self._drained, []
        return sum(self.requeue(tid, mono) for tid in drained)

    def _unassign(self, info: TaskInfo) -> None:
        if info.executor is None:
            return
        cls = info.row.spec.task_class
        self.inflight[cls] = max(0, self.inflight[cls] - 1)
        running = self._running.get(info.executor)
        if running is not None:
            running.discard(info.row.task_id)
            if not running:
                del self._running[info.executor]
        info.executor = None

    def _retry_backoff(self, info: TaskInfo, outcome: Outcome) -> float | None:
        """Seconds to wait before the next attempt (capped exponential), or ``None``: it ends."""
        klass = self.classes.get(info.row.spec.task_class)
        if klass is None or outcome not in RETRYABLE or info.cancel_requested:
            return None
        budget = klass.max_attempts
        if outcome is Outcome.RESOURCE:
            budget = max(budget, LOST_EXECUTOR_ATTEMPTS)
        attempts = info.row.attempts
        if attempts >= budget:
            return None
        return min(klass.retry_backoff_max_s, klass.retry_backoff_s * 2.0 ** (attempts - 1))

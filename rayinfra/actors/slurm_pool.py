"""The ``gpu_slurm`` class's pool: each task attempt is one Slurm job.

The scheduler treats it like :class:`~rayinfra.actors.executor_pool.ExecutorPools` (``ready``,
``send``, ``cancel``, ``placement``) with one executor, :data:`~rayinfra.slurm.bridge.EXECUTOR`,
whose slots are the class's adaptive limit (jobs outstanding at once). ``send`` renders each
task's script and ``sbatch`` es it; the record of every job (:class:`~rayinfra.slurm.bridge.
SlurmJob`) is durable in the state store before the job is watched, so a restarted scheduler
adopts the jobs still out there instead of submitting them again. One
:class:`~rayinfra.slurm.watcher.JobWatcher` polls every job in one query; a job that ends hands
its outcome (exit code, state, the tails of its output files) to the scheduler as the attempt's
result. Cancel and a task's timeout (counted from the job's start) ``scancel`` the job.

Slurm's commands run in the environment of an allow-list (as services' processes get,
:func:`rayinfra.services.supervisor.child_env`), so the job never inherits the runtime's Ray
variables or credentials.

Whether Slurm takes jobs is ``scontrol ping``, cached (:class:`SlurmProbe`): admission trusts an
answer for ``PING_OK_TTL_S``, the dispatcher for ``PING_DISPATCH_TTL_S`` before it hands a task
to ``sbatch``. Any Slurm command of the runtime that finds the controller unreachable (``sbatch``,
the watcher's ``squeue``/``sacct``, a ping, ``scancel``) ends that trust at once in every actor of
the head: it is noted in a file of the state dir (:class:`UnavailableMark`) that each probe looks
at before it answers from its cache. A task admitted while the controller was down, before
anything noticed, stays pending, not sent to ``sbatch``, and runs once the controller answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rayinfra.admission import SLURM_CLASS
from rayinfra.config import RayinfraConfig
from rayinfra.errors import BackendUnavailableError, InvalidArgumentError
from rayinfra.scheduling.limiter import Outcome
from rayinfra.scheduling.metrics import SchedulerMetrics
from rayinfra.scheduling.state import Dispatch, ResultsCallback, TaskResult, payload_of
from rayinfra.scheduling.tasks import TaskSpec
from rayinfra.services.supervisor import child_env
from rayinfra.slurm import bridge
from rayinfra.slurm.bridge import EXECUTOR, KV_NAMESPACE, SlurmJob
from rayinfra.slurm.cli import AsyncSlurmCli
from rayinfra.slurm.errors import SlurmCommandError, SlurmError, SlurmUnavailableError
from rayinfra.slurm.states import JobState
from rayinfra.slurm.watcher import JobWatcher
from rayinfra.store import EventRecord, StateStore
from rayinfra.taskstore import TaskRow

log = logging.getLogger(__name__)

PING_OK_TTL_S = 10.0  # admission trusts a controller that answered this long
PING_DISPATCH_TTL_S = 1.0  # the dispatcher asks again before sbatch once an answer is this old
PING_DOWN_TTL_S = 1.0  # one that did not answer is asked again this soon
UNAVAILABLE_MARK = "unavailable"  # the file under <state dir>/slurm that UnavailableMark keeps
SUBMIT_CONCURRENCY = 4  # sbatch calls at once
DEADLINE_CHECK_S = 1.0


class UnavailableMark:
    """When a Slurm command of this runtime last found Slurm unavailable: kept in this process
    and, with ``path``, in a file whose modification time every actor of the head reads (the
    gateway, the scheduler and the workflows actor each cache their own ``scontrol ping``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._noted_ns = 0  # wall clock: file times are compared with it across processes

    @classmethod
    def of(cls, config: RayinfraConfig) -> UnavailableMark:
        """The runtime's mark, ``<state dir>/slurm/unavailable``."""
        return cls(config.state.dir / "slurm" / UNAVAILABLE_MARK)

    def note(self, error: SlurmUnavailableError) -> None:
        """A command found Slurm unavailable now (an ``on_unavailable`` hook of the wrapper)."""
        now = time.time_ns()
        self._noted_ns = now
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{error}\n")
            os.utime(self.path, ns=(now, now))  # the kernel's coarse clock may lag time_ns
        except OSError as e:  # the other actors find out by their own pings, later
            log.warning("cannot note Slurm unavailable in %s: %s", self.path, e)

    def since(self, t_ns: int) -> bool:
        """Whether a command found Slurm unavailable at or after ``t_ns`` (``time.time_ns``)."""
        if self._noted_ns >= t_ns:
            return True
        if self.path is None:
            return False
        try:
            return self.path.stat().st_mtime_ns >= t_ns
        except FileNotFoundError:
            return False


def slurm_cli(config: RayinfraConfig, mark: UnavailableMark | None = None) -> AsyncSlurmCli:
    """The Slurm wrapper with the runtime's settings and an allow-listed environment; a command
    that finds Slurm unavailable notes it in ``mark``."""
    env = child_env(os.environ, {k: v for k, v in os.environ.items() if k == "SLURM_CONF"})
    return AsyncSlurmCli(
        bin_dir=config.slurm.bin_dir,
        timeout_s=config.slurm.command_timeout_s,
        env=env,
        on_unavailable=None if mark is None else mark.note,
    )


class SlurmProbe:
    """Whether Slurm can take jobs now (``scontrol ping``), cached: admission asks per batch.

    An answer that Slurm is up holds for the caller's ``max_age_s``, and only until a command
    (here or in another actor: ``mark``) finds Slurm unavailable; then the next question pings
    again. One that it is down holds for ``PING_DOWN_TTL_S``."""

    def __init__(self, cli: AsyncSlurmCli, mark: UnavailableMark | None = None) -> None:
        self.cli = cli
        self.mark = mark or UnavailableMark(None)
        self._reason: str | None = None
        self._until = float("-inf")  # a "down" answer holds until then (monotonic)
        self._pinged = float("-inf")  # when the last ping began (monotonic)
        self._pinged_ns = 0  # the same, on the wall clock the mark compares
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, config: RayinfraConfig) -> SlurmProbe:
        """A probe of the runtime's Slurm, its wrapper noting failures in the runtime's mark."""
        mark = UnavailableMark.of(config)
        return cls(slurm_cli(config, mark), mark)

    async def unavailable(self, max_age_s: float = PING_OK_TTL_S) -> str | None:
        """Why Slurm cannot take jobs (``None``: it can), asking ``scontrol ping`` unless an
        answer is fresh: "up" younger than ``max_age_s`` and not contradicted by a command
        since, or "down" younger than ``PING_DOWN_TTL_S``."""
        async with self._lock:
            now = time.monotonic()
            if self._reason is not None:
                if now < self._until:
                    return self._reason
            elif now - self._pinged < max_age_s and not self.mark.since(self._pinged_ns):
                return None
            self._pinged, self._pinged_ns = now, time.time_ns()
            try:
                await self.cli.ping()
                self._reason = None
            except SlurmError as e:
                self._reason, self._until = str(e), time.monotonic() + PING_DOWN_TTL_S
            return self._reason


class SlurmGate:
    """Admission of ``gpu_slurm`` tasks (:class:`rayinfra.admission.BackendGate`): the caller
    may run commands, Slurm answers, and each task's script renders from its template, so a
    task that could not become a job is refused with nothing queued."""

    def __init__(self, config: RayinfraConfig, probe: SlurmProbe | None = None) -> None:
        self.scripts = bridge.TaskScripts(config)
        self.probe = probe or SlurmProbe.of(config)

    async def check(self, specs: Sequence[TaskSpec], *, trusted: bool) -> None:
        """Raise NotTrustedError, BackendUnavailableError or InvalidArgumentError (the field
        named, ``tasks[i].`` prefixed in a batch) for the batch's ``gpu_slurm`` tasks."""
        mine = [(i, s) for i, s in enumerate(specs) if s.task_class == SLURM_CLASS]
        if not mine:
            return
        for i, spec in mine:
            try:
                self.scripts.render(spec.task_id, spec.payload, trusted=trusted)
            except InvalidArgumentError as e:  # NotTrustedError too
                name = e.field if len(specs) == 1 else f"tasks[{i}].{e.field}"
                raise type(e)(name, e.message) from None
        reason = await self.probe.unavailable()
        if reason is not None:
            raise BackendUnavailableError(
                f"task_class gpu_slurm needs Slurm, which is not available: {reason}; "
                "nothing was queued"
            )


class SlurmPool:
    """Submits, watches, cancels and adopts the jobs of ``gpu_slurm`` tasks."""

    def __init__(
        self,
        config: RayinfraConfig,
        store: StateStore,
        metrics: SchedulerMetrics,
        on_results: ResultsCallback,
        wake: Callable[[], None],
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.on_results = on_results
        self.wake = wake
        self.probe = SlurmProbe.of(config)
        self.cli = self.probe.cli  # every command it runs can end the probe's trust
        self.scripts = bridge.TaskScripts(config)
        self.output_dir = config.slurm_output_dir
        self.jobs: dict[str, SlurmJob] = {}  # task id -> its attempt's job (until settled)
        self._by_job: dict[str, str] = {}  # job id -> task id
        self._submitting: set[str] = set()  # task ids whose sbatch has not returned
        self._cancel_after_submit: set[str] = set()  # of those, the ones cancelled meanwhile
        self._recorded: dict[str, asyncio.Event] = {}  # task id -> set once its job is known
        self._sbatch = asyncio.Semaphore(SUBMIT_CONCURRENCY)
        self.watcher = JobWatcher(
            self.cli,
            self._on_change,
            min_interval_s=config.slurm.poll_interval_s,
            max_interval_s=config.slurm.poll_max_interval_s,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle
    def adopt(self, rows: Iterable[TaskRow]) -> dict[str, str]:
        """Re-attach to the jobs of unfinished tasks whose attempt the previous scheduler left
        out there: ``{task id: executor}`` for the state's recovery, each row marked running in
        that attempt again (the stored row lags: ``task_started`` is only an event). A task
        with no unsettled record of a later attempt (its sbatch never returned) runs again."""
        records = self.store.kv_items(KV_NAMESPACE)
        adopted: dict[str, str] = {}
        for row in rows:
            data = records.get(row.task_id)
            if data is None or row.spec.task_class != SLURM_CLASS:
                continue
            job = SlurmJob.from_dict(data)
            if job.settled or job.attempt <= row.attempts:
                continue
            row.status, row.attempts = "running", job.attempt
            row.started_at = job.start_time or job.submit_time
            self._watch(job)
            adopted[row.task_id] = EXECUTOR
        if adopted:
            log.info("adopted %d Slurm job(s) of running gpu_slurm tasks", len(adopted))
        return adopted

    def start(self) -> None:
        """Run the watcher and the deadline check (on the actor's event loop)."""
        self._tasks = [
            asyncio.create_task(self.watcher.run()),
            asyncio.create_task(self._deadlines()),
        ]

    def stop(self) -> None:
        self.watcher.stop()
        for t in self._tasks:
            t.cancel()

    # ------------------------------------------------------------------ the pool protocol
    async def missing(self, cls: str) -> str | None:
        """Never "no node can run it": while Slurm is down, tasks wait (``ready`` is empty)."""
        return None

    def take_error(self, cls: str) -> str | None:
        return None

    async def ready(self, cls: str, backlog: int, inflight: int) -> list[str]:
        """The executor if Slurm answered within ``PING_DISPATCH_TTL_S`` (and no command found
        it unavailable since): a task admitted while the controller was down stays pending
        instead of spending an attempt on an ``sbatch`` that cannot reach it."""
        reason = await self.probe.unavailable(PING_DISPATCH_TTL_S)
        if reason is not None:
            log.warning("%d gpu_slurm task(s) wait: %s", backlog, reason)
            return []
        return [EXECUTOR]

    def placement(self, cls: str) -> dict[str, str | None]:
        """Each job and the nodes it runs on (``None`` until Slurm placed it)."""
        return {f"slurm-job-{j.job_id}": j.node_list for j in self.jobs.values()}

    def retire_idle(self, load: Callable[[str], int]) -> None:
        """Nothing to retire: a job ends with its task."""

    def send(self, cls: str, name: str, items: list[tuple[Any, ...]]) -> None:
        """Submit one job per item, in the background (results come back through the watcher)."""
        for item in map(Dispatch._make, items):
            self._submitting.add(item.task_id)
            self._recorded.setdefault(item.task_id, asyncio.Event())
            self._tasks.append(asyncio.create_task(self._submit(item)))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def cancel(self, cls: str, name: str, task_ids: list[str]) -> None:
        """``scancel`` the tasks' jobs; each ends (``cancelled``) once the watcher sees it end.
        A task whose sbatch is still out is cancelled as soon as it returns."""
        for task_id in task_ids:
            job = self.jobs.get(task_id)
            if job is None:
                if task_id in self._submitting:
                    self._cancel_after_submit.add(task_id)
                continue
            job.cancel_requested = True
            await self._persist(job)
            await self._scancel(job)

    # ------------------------------------------------------------------ reading
    def record(self, task_id: str) -> dict[str, Any] | None:
        """The job record of ``task_id``'s latest attempt (``GET /slurm/status``)."""
        job = self.jobs.get(task_id)
        if job is not None:
            return job.status_dict()
        data = self.store.kv_get(KV_NAMESPACE, task_id)
        return None if data is None else SlurmJob.from_dict(data).status_dict()

    async def wait_record(self, task_id: str, wait_s: float) -> dict[str, Any] | None:
        """:meth:`record`, waiting up to ``wait_s`` for a job being submitted."""
        found = await asyncio.to_thread(self.record, task_id)
        if found is not None or wait_s <= 0:
            return found
        event = self._recorded.setdefault(task_id, asyncio.Event())  # set once sbatch answered
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), wait_s)
        if task_id not in self._submitting and self._recorded.get(task_id) is event:
            del self._recorded[task_id]  # never sent here (yet): forget the waiter
        return await asyncio.to_thread(self.record, task_id)

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "running")

    # ------------------------------------------------------------------ internals
    async def _submit(self, item: Dispatch) -> None:
        task_id, attempt = item.task_id, item.attempt
        try:
            async with self._sbatch:
                job = await self._sbatch_one(item)
        except Exception as e:  # every failure ends the attempt, with its cause
            self._submitting.discard(task_id)
            outcome = Outcome.FAILURE
            if isinstance(e, SlurmUnavailableError):  # (the wrapper noted it in the probe's mark)
                outcome = Outcome.RESOURCE  # Slurm is down: the task waits and runs again
            elif isinstance(e, InvalidArgumentError):
                outcome = Outcome.INVALID  # the template or config changed since admission
            elif not isinstance(e, SlurmCommandError):
                log.exception("submitting the Slurm job of task %s failed", task_id)
            self.metrics.slurm_failures.labels("submit").inc()
            await self.on_results(
                EXECUTOR, [TaskResult(task_id, outcome, f"sbatch failed: {e}", None)]
            )
            self._recorded.pop(task_id, asyncio.Event()).set()
            return
        self._submitting.discard(task_id)
        self._recorded.pop(task_id, asyncio.Event()).set()
        self.metrics.slurm_submitted.inc()
        self.store.append_events(
            [
                EventRecord(
                    0, "slurm_job_submitted", task_id,
                    {"task_id": task_id, "job_id": job.job_id, "attempt": attempt}, 0,
                )
            ]
        )  # fmt: skip
        log.info(
            "task %s attempt %d: Slurm job %s (%s)", task_id, attempt, job.job_id, job.template
        )

    async def _sbatch_one(self, item: Dispatch) -> SlurmJob:
        task_id = item.task_id
        template, script = self.scripts.render(task_id, payload_of(item.payload), trusted=True)
        await asyncio.to_thread(self.output_dir.mkdir, parents=True, exist_ok=True)
        extra = [f"--job-name=rayinfra-{task_id}"[:128]]
        if self.config.slurm.partition:
            extra.append(f"--partition={self.config.slurm.partition}")
        if self.config.slurm.account:
            extra.append(f"--account={self.config.slurm.account}")
        job_id = await self.cli.submit(script, extra_args=extra, cwd=self.output_dir)
        earlier = self.store.kv_get(KV_NAMESPACE, task_id)
        previous = [] if earlier is None else [*earlier.get("previous", []), earlier["job_id"]]
        job = SlurmJob(
            task_id=task_id,
            job_id=job_id,
            attempt=item.attempt,
            template=template,
            submit_time=time.time(),
            timeout_s=item.timeout_s,
            previous=previous,
        )
        if task_id in self._cancel_after_submit:
            self._cancel_after_submit.discard(task_id)
            job.cancel_requested = True
            await self._scancel(job)
        await self._persist(job)  # durable before it is watched: a restart adopts it
        self._watch(job)
        return job

    def _watch(self, job: SlurmJob) -> None:
        self.jobs[job.task_id] = job
        self._by_job[job.job_id] = job.task_id
        self.watcher.track(job.job_id)

    async def _persist(self, job: SlurmJob) -> None:
        await asyncio.wrap_future(self.store.kv_put(KV_NAMESPACE, job.task_id, job.to_dict()))

    async def _scancel(self, job: SlurmJob) -> None:
        try:
            await self.cli.cancel(job.job_id)
        except SlurmError as e:
            log.warning("scancel of Slurm job %s (task %s) failed: %s", job.job_id, job.task_id, e)
        self.watcher.track(job.job_id)  # poll soon

    async def _on_change(self, st: JobState) -> None:
        task_id = self._by_job.get(st.job_id)
        job = None if task_id is None else self.jobs.get(task_id)
        if job is None:
            return
        was_running = job.state == "running"
        job.observe(st, time.time())
        if job.state == "running" and not was_running:
            self.store.append_events(
                [EventRecord(0, "slurm_job_started", job.task_id, {"task_id": job.task_id,
                 "job_id": job.job_id, "node_list": job.node_list}, 0)]
            )  # fmt: skip
        if job.ended:
            self.watcher.untrack(job.job_id)
            await self._settle(job)
        else:
            await self._persist(job)

    async def _settle(self, job: SlurmJob) -> None:
        """Hand a finished job's outcome to the scheduler; then its record is settled."""
        outcome = job.outcome()
        error = job.failure() or job.error or ""
        stdout, stderr = await asyncio.to_thread(_tails, job.stdout_path, job.stderr_path)
        result = bridge.attempt_result(job, stdout, stderr)
        latency = 0.0 if job.start_time is None else max(0.0, (job.end_time or 0) - job.start_time)
        if outcome is Outcome.SUCCESS:
            self.metrics.slurm_completed.inc()
        else:
            self.metrics.slurm_failed.inc()
            self.metrics.slurm_failures.labels(job.state).inc()
        status = "completed" if outcome is Outcome.SUCCESS else job.state
        self.store.append_events(
            [
                EventRecord(
                    0, "slurm_job_completed", job.task_id,
                    {"task_id": job.task_id, "job_id": job.job_id,
                     "result": {"status": status, **({"error": error} if error else {})}}, 0,
                )
            ]
        )  # fmt: skip
        res = TaskResult(
            job.task_id,
            outcome,
            "" if outcome is Outcome.SUCCESS else error,
            result,
            started_at=job.start_time,
            finished_at=job.end_time,
            latency_s=latency,
        )
        await self.on_results(EXECUTOR, [res])
        job.settled = True
        await self._persist(job)
        self.jobs.pop(job.task_id, None)
        self._by_job.pop(job.job_id, None)
        self.wake()

    async def _deadlines(self) -> None:
        """Every ``DEADLINE_CHECK_S``: scancel the jobs running past their task's timeout."""
        while True:
            await asyncio.sleep(DEADLINE_CHECK_S)
            now = time.time()
            for job in [j for j in self.jobs.values() if j.overdue(now)]:
                try:
                    job.timed_out = True
                    await self._persist(job)
                    await self._scancel(job)
                except Exception:
                    log.exception("deadline check of Slurm job %s failed", job.job_id)


def _tail(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with Path(path).open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - bridge.OUTPUT_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None  # on a node-local disk of another node, or removed


def _tails(stdout: str | None, stderr: str | None) -> tuple[str | None, str | None]:
    return _tail(stdout), _tail(stderr if stderr != stdout else None)

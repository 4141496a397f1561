"""The scheduler's metrics: the original's names and meanings, on a private CollectorRegistry.

- ``env_queue_depth`` (+ ``{class=...}``): tasks pending in the scheduler.
- ``queue_depth``: files in ``ENV_QUEUE_DIR/pending``.
- ``gpu_wait_seconds``: p95 queue wait of GPU classes over the last 60 s.
- ``env_error_rate``: failed / finished over the last 60 s.
- ``orchestrator_concurrency_limit{class}``, ``orchestrator_inflight_tasks{class}``.
- ``orchestrator_task_errors_total{class,reason}`` (never labelled by task id).
- ``queue_tasks_submitted_total``, ``queue_tasks_processed_total`` (dispatched),
  ``queue_tasks_completed_total``.
- ``slurm_jobs_submitted_total``, ``slurm_jobs_completed_total``, ``slurm_jobs_failed_total``
  (the original bridge's), ``slurm_jobs_running`` and ``slurm_job_failures_total{state}``
  (``submit``: sbatch refused it; else the Slurm state it ended in: failed, cancelled, timeout,
  oom, preempted, node_fail, unknown).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric

from rayinfra.metrics import PrivateMetrics

WINDOW_S = 60.0


class _Window:
    """Timestamped samples kept for ``WINDOW_S`` seconds (pure; time passed in)."""

    def __init__(self) -> None:
        self.items: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> None:
        self.items.append((now, value))
        self.trim(now)

    def trim(self, now: float) -> None:
        while self.items and self.items[0][0] < now - WINDOW_S:
            self.items.popleft()

    def values(self, now: float) -> list[float]:
        self.trim(now)
        return [v for _, v in self.items]


class _Ratio:
    """Failed and finished counts over the last ``WINDOW_S`` seconds, in one bucket per second
    (pure; time passed in): bounded memory and O(1) work per batch at any task rate, where a
    sample per task would hold a minute of tasks (half a million at 9k/s)."""

    def __init__(self) -> None:
        self.buckets: deque[list[float]] = deque()  # [second, failed, finished]

    def add(self, now: float, failed: int, finished: int) -> None:
        second = math.floor(now)
        if self.buckets and self.buckets[-1][0] == second:
            bucket = self.buckets[-1]
            bucket[1] += failed
            bucket[2] += finished
        else:
            self.buckets.append([second, failed, finished])
        self.trim(now)

    def trim(self, now: float) -> None:
        while self.buckets and self.buckets[0][0] < now - WINDOW_S:
            self.buckets.popleft()

    def ratio(self, now: float) -> float:
        """failed / finished in the window (0.0 when nothing finished)."""
        self.trim(now)
        finished = sum(b[2] for b in self.buckets)
        return sum(b[1] for b in self.buckets) / finished if finished else 0.0


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class _QueueDepth:
    """``env_queue_depth`` as one family: the total plus one ``{class=...}`` series per class."""

    def __init__(self) -> None:
        self.by_class: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        m = Metric("env_queue_depth", "Tasks pending in the scheduler", "gauge")
        m.add_sample("env_queue_depth", {}, float(sum(self.by_class.values())))
        for cls, n in sorted(self.by_class.items()):
            m.add_sample("env_queue_depth", {"class": cls}, float(n))
        yield m


class SchedulerMetrics(PrivateMetrics):
    """Prometheus metrics of the scheduler plus the 60 s windows behind two gauges."""

    def __init__(self, gpu_classes: set[str]) -> None:
        r = CollectorRegistry()
        super().__init__(r)
        self.gpu_classes = gpu_classes
        self.env_queue_depth = _QueueDepth()
        r.register(self.env_queue_depth)
        self.queue_depth = Gauge("queue_depth", "Files in ENV_QUEUE_DIR/pending", registry=r)
        self.gpu_wait = Gauge("gpu_wait_seconds", "p95 queue wait of GPU classes, 60 s", registry=r)
        self.error_rate = Gauge("env_error_rate", "Failed / finished tasks, 60 s", registry=r)
        self.limit = Gauge(
            "orchestrator_concurrency_limit", "Adaptive concurrency limit", ["class"], registry=r
        )
        self.inflight = Gauge("orchestrator_inflight_tasks", "Tasks running", ["class"], registry=r)
        self.errors = Counter(
            "orchestrator_task_errors", "Task failures", ["class", "reason"], registry=r
        )
        self.submitted = Counter("queue_tasks_submitted", "Tasks accepted", registry=r)
        self.processed = Counter("queue_tasks_processed", "Tasks dispatched", registry=r)
        self.completed = Counter("queue_tasks_completed", "Tasks completed", registry=r)
        self.slurm_submitted = Counter("slurm_jobs_submitted", "Slurm jobs submitted", registry=r)
        self.slurm_completed = Counter(
            "slurm_jobs_completed", "Slurm jobs completed with exit code 0", registry=r
        )
        self.slurm_failed = Counter("slurm_jobs_failed", "Slurm jobs that did not", registry=r)
        self.slurm_running = Gauge("slurm_jobs_running", "Slurm jobs running", registry=r)
        self.slurm_failures = Counter(
            "slurm_job_failures", "Slurm jobs that failed, by how", ["state"], registry=r
        )
        self._waits = _Window()
        self._finished = _Ratio()

    def on_dispatch(self, task_class: str, waited_s: Sequence[float], now: float) -> None:
        """A batch of ``task_class`` dispatched, each task after ``waited_s`` in the queue."""
        self.processed.inc(len(waited_s))
        if task_class in self.gpu_classes:
            for waited in waited_s:
                self._waits.add(now, waited)

    def on_finish(self, ended: Iterable[tuple[str, str, str]], now: float) -> None:
        """Tasks ended, each ``(class, status, reason)``: one counter update per batch."""
        completed = failed = finished = 0
        for task_class, status, reason in ended:
            finished += 1
            if status == "completed":
                completed += 1
            elif status == "failed":
                failed += 1
                self.errors.labels(task_class, reason).inc()
        if completed:
            self.completed.inc(completed)
        if finished:
            self._finished.add(now, failed, finished)

    def refresh(
        self,
        now: float,
        pending: dict[str, int],
        inflight: dict[str, int],
        limits: dict[str, int],
        pending_files: int,
    ) -> None:
        self.env_queue_depth.by_class = dict(pending)
        for cls, n in inflight.items():
            self.inflight.labels(cls).set(n)
        for cls, n in limits.items():
            self.limit.labels(cls).set(n)
        self.queue_depth.set(pending_files)
        self.gpu_wait.set(p95(self._waits.values(now)))
        self.error_rate.set(self._finished.ratio(now))

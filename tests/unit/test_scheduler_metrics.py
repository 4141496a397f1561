"""The scheduler's metrics, fed by the batch: counters, and the 60 s error-rate window kept as
one bucket per second (bounded however many tasks end)."""

from __future__ import annotations

from prometheus_client import generate_latest

from rayinfra.scheduling.metrics import WINDOW_S, SchedulerMetrics, _Ratio


def _value(m: SchedulerMetrics, line_start: str) -> float:
    text = generate_latest(m.registry).decode()
    (line,) = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


def _refresh(m: SchedulerMetrics, now: float) -> None:
    m.refresh(now, {}, {}, {}, 0)


def test_a_batch_of_ends_counts_each_task_once() -> None:
    m = SchedulerMetrics(gpu_classes=set())
    m.on_finish(
        [("cpu", "completed", "success")] * 3
        + [("cpu", "failed", "failure"), ("gpu", "failed", "timeout"), ("cpu", "cancelled", "cancelled")],
        now=100.0,
    )  # fmt: skip
    assert _value(m, "queue_tasks_completed_total") == 3
    assert _value(m, 'orchestrator_task_errors_total{class="cpu",reason="failure"}') == 1
    assert _value(m, 'orchestrator_task_errors_total{class="gpu",reason="timeout"}') == 1
    _refresh(m, 100.5)
    assert _value(m, "env_error_rate") == 2 / 6


def test_dispatch_counts_the_batch_and_keeps_gpu_waits_only() -> None:
    m = SchedulerMetrics(gpu_classes={"gpu"})
    m.on_dispatch("cpu", [0.5, 9.0], now=10.0)
    m.on_dispatch("gpu", [1.0, 2.0, 3.0], now=10.0)
    assert _value(m, "queue_tasks_processed_total") == 5
    _refresh(m, 10.0)
    assert _value(m, "gpu_wait_seconds") == 3.0


def test_the_error_rate_forgets_what_ended_more_than_a_window_ago() -> None:
    r = _Ratio()
    r.add(1000.2, failed=4, finished=4)
    r.add(1000.9, failed=0, finished=4)  # the same second: one bucket
    assert len(r.buckets) == 1 and r.ratio(1001.0) == 0.5
    r.add(1030.0, failed=0, finished=8)
    assert r.ratio(1030.0) == 0.25
    assert r.ratio(1000.0 + WINDOW_S + 1.0) == 0.0  # the first second left the window
    assert r.ratio(1030.0 + WINDOW_S + 1.0) == 0.0 and not r.buckets


def test_a_million_ends_in_a_minute_keep_sixty_buckets() -> None:
    r = _Ratio()
    for i in range(1_000):  # 1,000 batches of 1,000 tasks over 60 s
        r.add(2000.0 + i * 0.06, failed=1, finished=1_000)
    assert len(r.buckets) <= WINDOW_S + 1
    assert abs(r.ratio(2060.0) - 0.001) < 1e-9

"""Unit tests for rayinfra.scheduling.state: every task transition, without Ray.

Clock values are plain numbers (``mono`` for queue order and waits, ``now`` for stored times);
executors are names. Each test asserts the exact decisions the state machine hands the actor.
"""

from __future__ import annotations

from typing import Any

import pytest

from rayinfra.config import ClassConfig, SchedulerSection
from rayinfra.scheduling.limiter import Outcome
from rayinfra.scheduling.state import (
    LOST_EXECUTOR_ATTEMPTS,
    Batch,
    Dispatch,
    SchedulerState,
    Settlement,
    TaskResult,
    payload_of,
)
from rayinfra.scheduling.tasks import TaskSpec
from rayinfra.taskstore import TaskRow


def make_state(**classes: ClassConfig) -> SchedulerState:
    classes = classes or {"cpu": ClassConfig(num_cpus=0, initial_limit=8, timeout_s=60.0)}
    settings = SchedulerSection(unschedulable_timeout_s=10.0, batch_size=64, aging_interval_s=30.0)
    return SchedulerState(classes, settings)


def row(task_id: str, cls: str = "cpu", priority: int = 0, **spec: Any) -> TaskRow:
    task = TaskSpec(task_id, cls, {"type": "noop"}, priority=priority, **spec)
    return TaskRow(spec=task, identity=task.identity(), trusted=True, status="pending")


def events(settled: Settlement) -> list[tuple[str, str]]:
    return [(t.row.task_id, t.event_type) for t in settled.transitions]


def items(batch: Batch) -> list[Dispatch]:
    """A batch's items (plain tuples, as they go to the executor) as Dispatches."""
    return [Dispatch._make(i) for i in batch.items]


def ok(task_id: str, started: float = 100.0, finished: float = 101.5) -> TaskResult:
    return TaskResult(task_id, Outcome.SUCCESS, result={"v": 1}, started_at=started,
                      finished_at=finished, latency_s=finished - started)  # fmt: skip


def test_queue_dispatch_complete() -> None:
    st = make_state()
    assert st.enqueue([row("a"), row("b")], mono=5.0) == 2
    assert len(st) == 2 and st.backlog("cpu") == 2
    (batch,) = st.dispatch("cpu", ["e1"], mono=7.0, now=100.0)
    assert (batch.task_class, batch.executor) == ("cpu", "e1")
    assert batch.items == [
        Dispatch("a", {"type": "noop"}, 60.0, 1, None),
        Dispatch("b", {"type": "noop"}, 60.0, 1, None),
    ]
    assert [(row.task_id, attempt) for row, attempt in batch.started] == [("a", 1), ("b", 1)]
    assert batch.waited_s == [2.0, 2.0]
    assert st.tasks["a"].row.status == "running" and st.tasks["a"].executor == "e1"
    assert st.inflight["cpu"] == 2 and st.load("e1") == 2 and st.backlog("cpu") == 0

    settled = st.on_results("e1", [ok("a")], now=200.0)
    assert events(settled) == [("a", "task_completed")]
    assert settled.transitions[0].event_data == {"attempts": 1, "duration_ms": 1500.0}
    assert [(r.task_id, r.status, o) for r, o in settled.finished] == [
        ("a", "completed", Outcome.SUCCESS)
    ]
    a = st.tasks["a"].row
    assert (a.result, a.error, a.started_at, a.finished_at) == ({"v": 1}, "", 100.0, 101.5)
    assert settled.retries == []
    assert st.inflight["cpu"] == 1 and st.load("e1") == 1
    assert "a" in st  # until its end is durable
    st.release("a")
    assert "a" not in st and len(st) == 1


def test_a_known_or_finished_row_is_not_queued_again() -> None:
    st = make_state()
    st.enqueue([row("a")], mono=0.0)
    done = row("b")
    done.status = "completed"
    assert st.enqueue([row("a"), done], mono=1.0) == 0
    assert st.backlog("cpu") == 1 and "b" not in st


def test_failure_retries_with_capped_exponential_backoff_until_the_budget_is_spent() -> None:
    st = make_state(
        cpu=ClassConfig(num_cpus=0, max_attempts=4, retry_backoff_s=1.0, retry_backoff_max_s=3.0)
    )
    st.enqueue([row("a")], mono=0.0)
    backoffs = []
    for attempt in range(1, 5):
        (batch,) = st.dispatch("cpu", ["e1"], mono=float(attempt), now=100.0)
        assert items(batch)[0].attempt == attempt
        settled = st.on_results("e1", [TaskResult("a", Outcome.FAILURE, "boom")], now=101.0)
        if attempt < 4:
            assert events(settled) == [("a", "task_retrying")]
            ((task_id, backoff),) = settled.retries
            assert task_id == "a" and settled.finished == []
            assert settled.transitions[0].event_data == {
                "error": "boom", "attempt": attempt, "backoff_s": backoff,
            }  # fmt: skip
            assert st.tasks["a"].row.status == "pending" and st.backlog("cpu") == 0
            backoffs.append(backoff)
            assert st.requeue("a", mono=float(attempt) + backoff)
    assert backoffs == [1.0, 2.0, 3.0]  # doubling, capped at retry_backoff_max_s
    assert events(settled) == [("a", "task_failed")]
    assert settled.transitions[0].event_data["attempts"] == 4
    assert settled.finished[0][0].error == "boom" and settled.retries == []


@pytest.mark.parametrize("outcome", [Outcome.INVALID, Outcome.SUCCESS])
def test_outcomes_that_are_never_retried(outcome: Outcome) -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, max_attempts=5))
    st.enqueue([row("a")], mono=0.0)
    st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    settled = st.on_results("e1", [TaskResult("a", outcome, "x")], now=1.0)
    assert settled.retries == [] and [o for _, o in settled.finished] == [outcome]


def test_timeout_fails_and_cuts_the_limit() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, initial_limit=10, max_limit=20))
    st.enqueue([row(f"t{i}") for i in range(3)], mono=0.0)
    st.dispatch("cpu", ["e1"], mono=0.0, now=50.0)
    assert st.limiters["cpu"].limit == 10
    res = TaskResult("t0", Outcome.TIMEOUT, "timed out after 5s", finished_at=55.0, latency_s=5.0)
    settled = st.on_results("e1", [res], now=56.0)
    assert events(settled) == [("t0", "task_failed")]
    assert settled.finished[0][0].error == "timed out after 5s"
    assert settled.transitions[0].event_data == {
        "attempts": 1, "error": "timed out after 5s", "duration_ms": 5000.0,
    }  # fmt: skip
    assert st.limiters["cpu"].limit == 9  # 10 * backoff_ratio 0.9
    assert st.describe("cpu") == {
        "pending": 0, "inflight": 2, "limit": 9, "unschedulable_since": None,
    }  # fmt: skip


def test_a_lost_executor_reruns_its_tasks_within_the_lost_executor_budget() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, initial_limit=10, retry_backoff_s=0.5))
    st.enqueue([row("a")], mono=0.0)
    for attempt in range(1, LOST_EXECUTOR_ATTEMPTS + 1):
        st.dispatch("cpu", [f"e{attempt}"], mono=float(attempt), now=0.0)
        settled = st.executor_lost(f"e{attempt}", "executor died: ActorDiedError", now=1.0)
        assert st.inflight["cpu"] == 0 and st.load(f"e{attempt}") == 0
        if attempt < LOST_EXECUTOR_ATTEMPTS:  # max_attempts is 1, yet it runs again
            assert settled.retries == [("a", 0.5 * 2 ** (attempt - 1))]
            assert st.requeue("a", mono=float(attempt))
    assert events(settled) == [("a", "task_failed")]
    assert settled.finished == [(st.tasks["a"].row, Outcome.RESOURCE)]
    assert st.tasks["a"].row.error == "executor died: ActorDiedError"
    assert st.limiters["cpu"].snapshot()["decreases"] == 3.0


def test_a_result_from_another_executor_is_stale() -> None:
    st = make_state()
    st.enqueue([row("a")], mono=0.0)
    st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    assert st.on_results("e2", [ok("a")], now=1.0) == Settlement()
    assert st.on_results("e1", [ok("nobody")], now=1.0) == Settlement()
    assert st.tasks["a"].row.status == "running" and st.inflight["cpu"] == 1


def test_cancel_while_queued_ends_it_at_once() -> None:
    st = make_state()
    st.enqueue([row("a"), row("b")], mono=0.0)
    settled = st.cancel("a", now=3.0)
    assert events(settled) == [("a", "task_cancelled")]
    assert settled.transitions[0].event_data == {"attempts": 0, "error": "cancelled"}
    assert settled.finished == [(st.tasks["a"].row, Outcome.CANCELLED)]
    assert st.tasks["a"].row.finished_at == 3.0
    (batch,) = st.dispatch("cpu", ["e1"], mono=1.0, now=4.0)
    assert [i.task_id for i in items(batch)] == ["b"]


def test_cancel_while_running_waits_for_the_executor_and_is_not_a_sample() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, max_attempts=3))
    st.enqueue([row("a"), row("b")], mono=0.0)
    st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    assert st.cancel("a", now=1.0) == Settlement()
    assert st.cancel("b", now=1.0) == Settlement()
    assert st.tasks["a"].cancel_requested and st.tasks["a"].executor == "e1"
    samples = st.limiters["cpu"].snapshot()["samples"]
    cancelled = TaskResult("a", Outcome.CANCELLED, "cancelled")
    failed = TaskResult("b", Outcome.FAILURE, "killed")  # retryable, but a cancel was asked
    settled = st.on_results("e1", [cancelled, failed], now=2.0)
    assert events(settled) == [("a", "task_cancelled"), ("b", "task_failed")]
    assert settled.retries == []
    assert st.limiters["cpu"].snapshot()["samples"] == samples + 1  # b's, not a's
    assert st.inflight["cpu"] == 0


def test_cancel_during_a_retry_backoff_ends_it_and_the_requeue_is_void() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, max_attempts=2))
    st.enqueue([row("a")], mono=0.0)
    st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    assert st.on_results("e1", [TaskResult("a", Outcome.FAILURE, "x")], now=1.0).retries
    assert events(st.cancel("a", now=1.5)) == [("a", "task_cancelled")]
    assert st.requeue("a", mono=2.0) is False and st.backlog("cpu") == 0


def test_an_unschedulable_class_fails_its_queue_after_the_timeout() -> None:
    st = make_state()
    st.enqueue([row("a"), row("b")], mono=0.0)
    gpu = "no node can run task class 'cpu': it needs resource GPU=1"
    assert st.placement("cpu", gpu, None, mono=1.0, now=0.0) == Settlement()
    assert st.describe("cpu")["unschedulable_since"] == 1.0
    assert st.placement("cpu", gpu, None, mono=10.9, now=0.0) == Settlement()
    settled = st.placement("cpu", gpu, None, mono=11.0, now=9.0)
    assert events(settled) == [("a", "task_failed"), ("b", "task_failed")]
    assert {o for _, o in settled.finished} == {Outcome.UNSCHEDULABLE}
    assert st.tasks["a"].row.error == gpu and st.tasks["a"].row.attempts == 0
    assert st.backlog("cpu") == 0 and st.describe("cpu")["unschedulable_since"] is None


def test_a_node_appearing_resets_the_unschedulable_clock() -> None:
    st = make_state()
    st.enqueue([row("a")], mono=0.0)
    st.placement("cpu", "missing GPU", None, mono=0.0, now=0.0)
    st.placement("cpu", None, None, mono=5.0, now=0.0)
    assert st.placement("cpu", "missing GPU", None, mono=12.0, now=0.0) == Settlement()
    assert st.describe("cpu")["unschedulable_since"] == 12.0


def test_executors_that_cannot_start_fail_the_queue_at_once() -> None:
    st = make_state()
    st.enqueue([row("a")], mono=0.0)
    settled = st.placement("cpu", None, "executor for class 'cpu' failed to start", 0.0, 1.0)
    assert events(settled) == [("a", "task_failed")]
    assert settled.finished[0][1] is Outcome.EXECUTOR and settled.retries == []


def test_a_task_of_a_class_no_longer_configured_fails() -> None:
    st = make_state()
    assert st.enqueue([row("old", cls="retired"), row("gone", cls="retired")], mono=0.0) == 0
    assert "old" in st  # known, so a catch-up does not queue it again
    assert events(st.cancel("gone", now=0.5)) == [("gone", "task_cancelled")]
    settled = st.fail_homeless(now=1.0)
    assert events(settled) == [("old", "task_failed")]
    assert st.tasks["old"].row.error == "task class 'retired' is no longer configured"
    assert settled.finished[0][1] is Outcome.INVALID
    assert st.fail_homeless(now=2.0) == Settlement()


def test_recovered_running_rows_queue_again_as_pending() -> None:
    st = make_state()
    was_running = row("a")
    was_running.status, was_running.attempts = "running", 1
    st.recover([was_running, row("b")], mono=0.0)
    assert st.tasks["a"].row.status == "pending" and st.backlog("cpu") == 2
    (batch,) = st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    assert [i.attempt for i in items(batch)] == [2, 1]


def test_an_adopted_attempt_goes_on_running_on_its_executor() -> None:
    """A Slurm job outlives the scheduler: its task is running there again, in flight, and its
    result (from that executor) ends it; the others queue as usual."""
    st = make_state()
    adopted = row("a")
    adopted.status, adopted.attempts = "running", 2  # the pool marked it (attempt 2's job)
    st.recover([adopted, row("b")], mono=0.0, adopted={"a": "slurm"})
    assert st.tasks["a"].executor == "slurm" and st.tasks["a"].row.status == "running"
    assert st.inflight["cpu"] == 1 and st.load("slurm") == 1 and st.backlog("cpu") == 1
    done = st.on_results("slurm", [ok("a")], now=200.0)
    assert events(done) == [("a", "task_completed")] and done.finished[0][0].attempts == 2
    assert st.inflight["cpu"] == 0
    stale = make_state()  # an adopted id of a class not configured here is not adopted
    other = row("c", cls="gone")
    other.status = "running"
    stale.recover([other], mono=0.0, adopted={"c": "slurm"})
    assert stale.tasks["c"].executor is None


def test_slots_bound_dispatch_to_free_executor_slots() -> None:
    st = make_state(gpu=ClassConfig(num_cpus=0, num_gpus=1, initial_limit=8, max_limit=8))
    assert st.classes["gpu"].slots == 1
    st.enqueue([row(f"g{i}", cls="gpu") for i in range(5)], mono=0.0)
    batches = st.dispatch("gpu", ["e1", "e2"], mono=0.0, now=0.0)
    assert [(b.executor, [i.task_id for i in items(b)]) for b in batches] == [
        ("e1", ["g0"]),
        ("e2", ["g1"]),
    ]
    assert st.dispatch("gpu", ["e1", "e2"], mono=1.0, now=0.0) == []  # limit 8, slots full
    st.on_results("e2", [ok("g1")], now=2.0)
    (batch,) = st.dispatch("gpu", ["e1", "e2"], mono=2.0, now=0.0)
    assert (batch.executor, items(batch)[0].task_id) == ("e2", "g2")


def test_unbounded_classes_fill_the_least_loaded_executor_in_batches() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, initial_limit=10, max_limit=10))
    st.settings.batch_size = 4
    st.enqueue([row(f"t{i}") for i in range(12)], mono=0.0)
    batches = st.dispatch("cpu", ["e1", "e2"], mono=0.0, now=0.0)
    # a queue longer than a batch per executor goes in its share per executor (12 / 2), as far
    # as the limit (10) allows
    assert [(b.executor, len(b.items)) for b in batches] == [("e1", 6), ("e2", 4)]
    assert st.backlog("cpu") == 2 and st.inflight["cpu"] == 10


def test_a_short_queue_goes_in_batches_of_batch_size() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, initial_limit=64, max_limit=64))
    st.settings.batch_size = 4
    st.enqueue([row(f"t{i}") for i in range(7)], mono=0.0)
    batches = st.dispatch("cpu", ["e1", "e2"], mono=0.0, now=0.0)
    assert [(b.executor, len(b.items)) for b in batches] == [("e1", 4), ("e2", 3)]


def test_priority_order_fifo_within_a_priority() -> None:
    st = make_state()
    st.enqueue([row(n, priority=p) for p, n in [(0, "a"), (5, "b"), (0, "c"), (9, "d"), (5, "e")]],
               mono=0.0)  # fmt: skip
    (batch,) = st.dispatch("cpu", ["e1"], mono=1.0, now=0.0)
    assert [i.task_id for i in items(batch)] == ["d", "b", "e", "a", "c"]


def test_items_carry_the_task_timeout_and_merged_runtime_env() -> None:
    st = make_state(
        cpu=ClassConfig(num_cpus=0, timeout_s=60.0, runtime_env={"env_vars": {"A": "1", "B": "1"}})
    )
    st.enqueue([row("a", timeout_s=5.0, runtime_env={"env_vars": {"B": "2"}})], mono=0.0)
    (batch,) = st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    assert items(batch)[0].timeout_s == 5.0
    assert items(batch)[0].runtime_env == {"env_vars": {"A": "1", "B": "2"}}


def test_gauges() -> None:
    st = make_state()
    st.enqueue([row("a"), row("b")], mono=0.0)
    st.dispatch("cpu", ["e1"], mono=0.0, now=0.0)
    st.enqueue([row("c")], mono=0.0)
    assert st.gauges() == ({"cpu": 1}, {"cpu": 2}, {"cpu": 8})


def test_drain_stops_dispatch_and_hands_running_attempts_back_uncounted() -> None:
    st = make_state(
        cpu=ClassConfig(num_cpus=0, initial_limit=8, timeout_s=60.0),
        gpu_slurm=ClassConfig(num_cpus=0, initial_limit=8, timeout_s=60.0),
    )
    st.enqueue([row("a"), row("b"), row("s", cls="gpu_slurm"), row("q")], mono=1.0)
    st.dispatch("cpu", ["e1"], mono=2.0, now=100.0)  # a, b, q run on e1
    st.dispatch("gpu_slurm", ["slurm"], mono=2.0, now=100.0)
    st.on_results("e1", [ok("q")], now=101.0)  # q ended before the stop
    st.enqueue([row("later")], mono=3.0)
    assert st.running() == 3 and st.running(keep={"gpu_slurm"}) == 2
    settled, cancel = st.drain(now=110.0, keep={"gpu_slurm"})
    assert events(settled) == [("a", "task_retrying"), ("b", "task_retrying")]
    assert cancel == {("cpu", "e1"): ["a", "b"]}
    a = st.tasks["a"].row
    assert (a.status, a.started_at, a.attempts) == ("pending", None, 0)  # not counted
    assert settled.transitions[0].event_data["error"].startswith("the runtime stopped")
    assert settled.finished == [] and settled.retries == []
    assert st.running(keep={"gpu_slurm"}) == 0 and st.inflight["cpu"] == 0
    assert st.tasks["s"].row.status == "running"  # a Slurm job outlives the runtime
    assert st.dispatch("cpu", ["e1"], mono=4.0, now=111.0) == []  # nothing new starts
    assert st.backlog("cpu") == 1
    # a late report of what was handed back is stale
    assert events(st.on_results("e1", [ok("a")], now=112.0)) == []


def test_resume_after_a_drain_dispatches_again_what_was_handed_back_first() -> None:
    st = make_state(cpu=ClassConfig(num_cpus=0, initial_limit=8, timeout_s=60.0))
    st.enqueue([row("a", priority=1), row("b", priority=1)], mono=1.0)
    st.dispatch("cpu", ["e1"], mono=2.0, now=100.0)
    st.enqueue([row("later")], mono=3.0)
    st.drain(now=110.0)
    assert st.dispatch("cpu", ["e1"], mono=4.0, now=111.0) == []
    assert st.resume(mono=5.0) == 2
    (batch,) = st.dispatch("cpu", ["e1"], mono=6.0, now=112.0)
    assert [i.task_id for i in items(batch)] == ["a", "b", "later"]
    assert [i.attempt for i in items(batch)] == [1, 1, 1]  # the drained attempt not counted
    assert st.resume(mono=7.0) == 0  # nothing drained any more


def test_a_stored_rows_payload_goes_to_the_executor_as_its_text() -> None:
    """A row read back from the store keeps its payload as text: the dispatch sends that text
    (the executor decodes it, ``payload_of``), so the scheduler never decodes it."""
    st = make_state()
    text = '{"type":"echo","k":[1,{"a":null}]}'
    spec = TaskSpec("s", "cpu", None, 0, "", None, None, text)
    st.enqueue([TaskRow(spec=spec, identity="", trusted=True, status="pending")], mono=1.0)
    st.enqueue([row("d")], mono=1.0)  # built from the object: sent as the object
    (batch,) = st.dispatch("cpu", ["e1"], mono=2.0, now=10.0)
    sent = {i.task_id: i.payload for i in items(batch)}
    assert sent == {"s": text, "d": {"type": "noop"}} and spec._payload is None
    assert payload_of(sent["s"]) == {"type": "echo", "k": [1, {"a": None}]}
    assert payload_of(sent["d"]) == {"type": "noop"}

"""The executor actor's class without Ray: a cancel may arrive before its task's submit. Its
replies carry results as plain tuples (the scheduler's wire form), read here as TaskResults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayinfra.actors.executor import ExecutorActor
from rayinfra.config import config_to_dict, load_config
from rayinfra.scheduling.limiter import Outcome
from rayinfra.scheduling.state import Dispatch, TaskResult


def _executor(tmp_path: Path) -> ExecutorActor:
    cfg = load_config(env={"HOME": str(tmp_path), "RAYINFRA_STATE_DIR": str(tmp_path / "s")})
    return ExecutorActor("cpu_short", config_to_dict(cfg.config), 2)


async def _submit(ex: ExecutorActor, batch: list[dict[str, Any]]) -> list[TaskResult]:
    """``batch`` as ``Dispatch`` keywords, sent as the scheduler's pool sends them."""
    replied = await ex.submit([tuple(Dispatch(attempt=1, timeout_s=None, **d)) for d in batch])
    assert all(type(r) is tuple for r in replied)  # not a named tuple: pickled by class
    return [TaskResult._make(r) for r in replied]


async def _take(ex: ExecutorActor, timeout_s: float) -> list[TaskResult]:
    replied = await ex.take_results(timeout_s)
    assert all(type(r) is tuple for r in replied)
    return [TaskResult._make(r) for r in replied]


async def test_a_cancel_that_overtakes_its_submit_still_cancels_the_task(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    assert await ex.cancel(["t1"]) == []  # not here yet: remembered
    (early,) = await _submit(ex, [{"task_id": "t1", "payload": {"type": "sleep", "seconds": 60}}])
    assert early.task_id == "t1" and early.outcome is Outcome.CANCELLED and "t1" not in ex.running
    # an inline handler's result comes with its submit's reply...
    (noop,) = await _submit(ex, [{"task_id": "t2", "payload": {"type": "noop"}}])
    assert noop.task_id == "t2" and noop.outcome is Outcome.SUCCESS
    # remembered once: the same id submitted again (a retry) runs
    again = await _submit(ex, [{"task_id": "t1", "payload": {"type": "noop"}}])
    assert [r.outcome for r in again] == [Outcome.SUCCESS]
    assert await _take(ex, 0.2) == []  # ...and never again from take_results


async def test_a_threaded_handlers_result_comes_from_take_results(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    assert (
        await _submit(ex, [{"task_id": "t4", "payload": {"type": "sleep", "seconds": 0.1}}]) == []
    )
    (res,) = await _take(ex, 10.0)
    assert res.task_id == "t4" and res.outcome is Outcome.SUCCESS


async def test_cancel_of_a_running_task_ends_it_cancelled(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    await _submit(ex, [{"task_id": "t3", "payload": {"type": "sleep", "seconds": 60}}])
    assert await ex.cancel(["t3"]) == ["t3"]
    (res,) = await _take(ex, 10.0)
    assert res.task_id == "t3" and res.outcome is Outcome.CANCELLED

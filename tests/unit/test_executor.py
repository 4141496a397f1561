"""The executor actor's class without Ray: a cancel may arrive before its task's submit."""

from __future__ import annotations

from pathlib import Path

from rayinfra.actors.executor import ExecutorActor
from rayinfra.config import config_to_dict, load_config
from rayinfra.scheduling.limiter import Outcome


def _executor(tmp_path: Path) -> ExecutorActor:
    cfg = load_config(env={"HOME": str(tmp_path), "RAYINFRA_STATE_DIR": str(tmp_path / "s")})
    return ExecutorActor("cpu_short", config_to_dict(cfg.config), 2)


async def test_a_cancel_that_overtakes_its_submit_still_cancels_the_task(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    assert await ex.cancel(["t1"]) == []  # not here yet: remembered
    await ex.submit([{"task_id": "t1", "payload": {"type": "sleep", "seconds": 60}}])
    await ex.submit([{"task_id": "t2", "payload": {"type": "noop"}}])
    got = {r.task_id: r for r in await ex.take_results(5.0)}
    while "t2" not in got:
        got.update({r.task_id: r for r in await ex.take_results(5.0)})
    assert got["t1"].outcome is Outcome.CANCELLED and "t1" not in ex.running
    assert got["t2"].outcome is Outcome.SUCCESS
    # remembered once: the same id submitted again (a retry) runs
    await ex.submit([{"task_id": "t1", "payload": {"type": "noop"}}])
    assert [r.outcome for r in await ex.take_results(5.0)] == [Outcome.SUCCESS]


async def test_cancel_of_a_running_task_ends_it_cancelled(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    await ex.submit([{"task_id": "t3", "payload": {"type": "sleep", "seconds": 60}}])
    assert await ex.cancel(["t3"]) == ["t3"]
    (res,) = await ex.take_results(10.0)
    assert res.task_id == "t3" and res.outcome is Outcome.CANCELLED

"""``task_started`` events (``rayinfra.actors.task_started.StartedEvents``) on a real state store:
STARTED_AFTER_S after a dispatch, only the attempts of it still running get one; an attempt
that ended sooner, or that was retried meanwhile, gets none."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rayinfra import taskstore
from rayinfra.actors.task_started import STARTED_AFTER_S, StartedEvents
from rayinfra.scheduling.tasks import TaskSpec
from rayinfra.store import StateStore
from rayinfra.taskstore import TaskRow


def _row(task_id: str) -> TaskRow:
    spec = TaskSpec(task_id=task_id, task_class="cpu_short", payload={"type": "noop"})
    return TaskRow(spec, "", True, "running", attempts=1, submitted_at=100.0, started_at=100.0)


def test_only_attempts_still_running_after_the_delay_get_a_task_started(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        written: list[int] = []

        async def dispatch_then_wait() -> None:
            events = StartedEvents(store, written.append)
            running, ended, retried = _row("t-running"), _row("t-ended"), _row("t-retried")
            events.dispatched([(running, 1), (ended, 1), (retried, 1)])
            ended.status = "completed"  # its result came back within the delay
            retried.attempts = 2  # its first attempt ended and another began
            await asyncio.sleep(STARTED_AFTER_S * 4)
            for _ in range(100):  # the write is queued behind the store's writer
                if written:
                    break
                await asyncio.sleep(0.05)

        asyncio.run(dispatch_then_wait())
        rows = store.read(
            lambda c: c.execute(
                "SELECT event_type, resource_id FROM events ORDER BY seq"
            ).fetchall()
        )
        assert rows == [("task_started", "t-running")]
        assert written and written[-1] == store.read(
            lambda c: c.execute("SELECT max(seq) FROM events").fetchone()[0]
        )
        assert taskstore.STATUS_OF_EVENT["task_started"] == "running"

"""An executor process is SIGKILLed mid-task, on a runtime of this module's own: the executor's
pid comes from the client's status (the class's executors) and the executor's own ``ping``;
the kill is ``kill -9`` of that process, not a Ray call. The tasks that were running on it run
again (attempt 2) and complete on a new executor, every task of the batch and of a stream of
short tasks submitted across the kill completes (0 acknowledged tasks lost), and the runtime
answers Health.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayinfra import AgentInfraSync, raywrap
from rayinfra.config import RayinfraConfig
from rayinfra.connection import pid_alive
from tests.support.faults import (
    TaskStream,
    assert_health,
    assert_none_lost,
    grpc_client,
    runtime_of_its_own,
)
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cfg() -> Iterator[RayinfraConfig]:
    with runtime_of_its_own("exkill", ray_driver=True) as config:  # a driver: to ask for pids
        yield config


def executors(infra: AgentInfraSync, task_class: str) -> dict[str, str | None]:
    """The class's executors (name -> node) as the client's status shows them."""
    live = infra.runtime_status()["classes"][task_class].get("live") or {}
    found: dict[str, str | None] = live.get("executors") or {}
    return found


def test_an_executor_killed_mid_task(cfg: RayinfraConfig) -> None:
    run = uuid.uuid4().hex[:6]
    infra = grpc_client(cfg)
    try:
        batch = [f"ek-{run}-{i}" for i in range(4)]
        infra.submit_tasks(
            [
                {"task_id": t, "payload": {"type": "sleep", "seconds": 5}, "task_class": "cpu_long"}
                for t in batch
            ]
        )
        stream = TaskStream(lambda: grpc_client(cfg), f"eks-{run}", {"type": "sleep", "seconds": 0.1},
                            task_class="cpu_long")  # fmt: skip
        stream.start()
        try:
            stream.wait_for(10)
            running = wait_until(
                "some of the batch to run",
                lambda: [t for t in batch if infra.get_task_status(t)["status"] == "running"],
                timeout=60,
            )
            names = list(executors(infra, "cpu_long"))
            assert names, "no cpu_long executor in the status"
            pids = [
                int(raywrap.invoke(raywrap.get_actor(n), "ping", timeout_s=30)["pid"])
                for n in names
            ]
            assert os.getpid() not in pids and all(Path(f"/proc/{p}").exists() for p in pids)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed_at = len(stream.acknowledged)
            wait_until(
                "the processes to be gone", lambda: not any(map(pid_alive, pids)), timeout=30
            )
            stream.wait_for(killed_at + 10, timeout_s=120)  # submits go on after the kill
        finally:
            ids = stream.stop()
        done = {d["task_id"]: d for d in assert_none_lost(infra, batch + ids)}
        for t in running:  # what ran on the killed executor ran again, and only once more
            assert done[t]["attempts"] == 2, done[t]
        assert {done[t]["attempts"] for t in batch} <= {1, 2}
        new = executors(infra, "cpu_long")
        assert new and not set(names) & set(new)  # fresh executors took over
        assert_health(infra)
        print(f"killed {names} (pids {pids}) with {len(running)} running; {len(ids)} more tasks")
    finally:
        infra.stop()

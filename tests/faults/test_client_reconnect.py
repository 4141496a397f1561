"""A long-lived ``AgentInfra`` across a whole-runtime crash and ``rayinfra start``.

The client is what a user's long-running program holds: made by ``AgentInfraSync(config=...)``
in a process that is not part of the runtime's Ray cluster, so it talks to the gateway. The
whole runtime is SIGKILLed (every process of the head's session) while the client waits on
tasks, streams their results and follows the event stream; while it is down, a call fails with
one clear error once the configured deadline passes (never hangs), each retry logged; after
``rayinfra start`` the client reconnects by itself and everything pending completes: 0
acknowledged tasks lost, each result and event seen once, the runtime answers Health.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rayinfra import AgentInfraSync
from rayinfra.config import load_config
from rayinfra.errors import UnavailableError
from tests.conftest import SHELL_CLASSES_TOML, RuntimeSpec, make_runtime_spec
from tests.support.runtime_cli import cli, kill_runtime

pytestmark = pytest.mark.integration

DEADLINE_S = 4.0  # DSPY_AGENT_SERVICE_TIMEOUT of the client under test
SLEEP_S = 4  # long enough that the crash lands while the tasks run


@pytest.fixture
def spec() -> Iterator[RuntimeSpec]:
    s = make_runtime_spec(
        "reconnect",
        SHELL_CLASSES_TOML
        + f"[client]\nservice_timeout_s = {DEADLINE_S}\nreconnect_backoff_s = 0.5\n",
    )
    cli(s, "start", "--daemon", check=True)
    try:
        yield s
    finally:
        cli(s, "stop", "--force")
        shutil.rmtree(s.root, ignore_errors=True)


class Collector(threading.Thread):
    """Drains an iterator of the client in a thread of its own, keeping what it yields."""

    def __init__(self, make: Any, until: Any) -> None:
        super().__init__(daemon=True)
        self.make, self.until = make, until
        self.items: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for item in self.make():
                self.items.append(item)
                if self.until(self.items):
                    return
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_a_client_outlives_a_runtime_crash_and_finishes_what_was_pending(
    spec: RuntimeSpec, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(env=spec.env()).config
    infra = AgentInfraSync(config=config).start()
    try:
        assert infra._infra.transport.kind == "grpc"  # not a Ray driver: it can outlive Ray
        run = uuid.uuid4().hex[:8]
        sleepers = [f"rc-{run}-sleep-{i}" for i in range(6)]
        quick = [f"rc-{run}-noop-{i}" for i in range(50)]
        acked = infra.submit_tasks(
            [
                {"task_id": t, "payload": {"type": "shell", "argv": ["sleep", str(SLEEP_S)]}}
                for t in sleepers
            ]
            + [{"task_id": t, "payload": {"type": "noop"}} for t in quick]
        )
        assert all(a["success"] for a in acked)
        done_before = infra.wait_tasks(quick, timeout=60)
        assert {d["status"] for d in done_before} == {"completed"}

        waited: dict[str, Any] = {}
        waiter = threading.Thread(
            target=lambda: waited.update(result=infra.wait_tasks(sleepers, timeout=300)),
            daemon=True,
        )
        results = Collector(
            lambda: infra.stream_task_results(sleepers),
            lambda items: (
                {i["task_id"] for i in items if i["status"] == "completed"} >= set(sleepers)
            ),
        )
        events = Collector(
            lambda: infra.stream_events(["task_completed"]),
            lambda items: {e["resource_id"] for e in items} >= set(sleepers),
        )
        for t in (waiter, results, events):
            t.start()
        time.sleep(1.5)  # the sleepers run now
        assert {infra.get_task_status(t)["status"] for t in sleepers} <= {"running", "pending"}

        kill_runtime(spec)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rayinfra.client.grpc_transport"):
            began = time.monotonic()
            with pytest.raises(UnavailableError, match="DSPY_AGENT_SERVICE_TIMEOUT"):
                infra.get_task_status(sleepers[0])
            waited_s = time.monotonic() - began
        # it waited out the deadline, retrying, and then gave up: no hang, one clear error
        assert DEADLINE_S * 0.9 <= waited_s < DEADLINE_S + 30, waited_s
        # this call's retries (the waiter's and the streams' log theirs meanwhile)
        retries = [
            r.getMessage()
            for r in caplog.records
            if "unavailable" in r.getMessage() and "GetTasks attempt" in r.getMessage()
        ]
        assert len(retries) >= 3, [r.getMessage() for r in caplog.records]
        assert "GetTasks attempt 1 failed" in retries[0]
        health = infra.health_check()
        assert health["healthy"] is False and "unavailable" in health["error"]

        cli(spec, "start", "--daemon", check=True)
        waiter.join(timeout=240)
        results.join(timeout=60)
        events.join(timeout=60)
        assert not waiter.is_alive() and "result" in waited, "wait_tasks never returned"
        assert [r["task_id"] for r in waited["result"]] == sleepers
        assert {r["status"] for r in waited["result"]} == {"completed"}
        for c in (results, events):
            assert c.error is None, c.error
            assert not c.is_alive()
        finals = [i for i in results.items if i["status"] == "completed"]
        assert sorted(i["task_id"] for i in finals) == sorted(sleepers)  # each once
        seen = [e["resource_id"] for e in events.items if e["resource_id"] in sleepers]
        assert sorted(seen) == sorted(sleepers)  # each completion event once
        assert [e["seq"] for e in events.items] == sorted({e["seq"] for e in events.items})

        # 0 acknowledged tasks lost, and the runtime answers
        statuses = {t: infra.get_task_status(t)["status"] for t in sleepers + quick}
        assert set(statuses.values()) == {"completed"}
        assert infra.health_check()["healthy"] is True
        assert infra.submit_task(payload={"type": "noop"})["success"]
    finally:
        infra.stop()

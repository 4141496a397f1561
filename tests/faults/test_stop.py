"""``rayinfra stop`` as a user runs it: it drains running tasks (they get
``scheduler.drain_timeout_s``, or ``--drain-timeout``, to finish; what still runs is requeued,
durably, and runs on the next start), ``--force`` skips the drain, and ``logs --follow`` keeps
printing a service's new lines until interrupted. Real CLI processes against a runtime of the
test's own; 0 acknowledged tasks lost across each stop and start."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rayinfra import taskstore
from rayinfra.config import RayinfraConfig, load_config
from rayinfra.store import StateStore
from tests.conftest import RuntimeSpec, make_runtime_spec
from tests.support.faults import grpc_client as client
from tests.support.runtime_cli import RAYINFRA, cli

pytestmark = pytest.mark.integration

TICKER = (
    "import time\nfor i in range(100000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
)


@pytest.fixture
def spec() -> Iterator[RuntimeSpec]:
    s = make_runtime_spec(
        "stop",
        f"""
[services]
profile = "none"

[services.definitions.ticker]
driver = "process"
argv = {json.dumps([sys.executable, "-c", TICKER])}
""",
    )
    try:
        yield s
    finally:
        cli(s, "stop", "--force")
        shutil.rmtree(s.root, ignore_errors=True)


def config(spec: RuntimeSpec) -> RayinfraConfig:
    return load_config(env=spec.env()).config


def stored(cfg: RayinfraConfig, ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The tasks as the state store has them while no runtime runs."""
    with StateStore(cfg.state.db_path) as store:
        found = store.read(lambda c: taskstore.get_statuses(c, ids))
    return {t: found.get(t) for t in ids}


def start(spec: RuntimeSpec) -> None:
    res = cli(spec, "start", "--daemon")
    assert res.returncode == 0, res.stderr


def test_stop_drains_running_tasks_and_the_next_start_runs_what_was_left(
    spec: RuntimeSpec,
) -> None:
    start(spec)
    cfg = config(spec)
    run = uuid.uuid4().hex[:6]
    quick = [f"q-{run}-{i}" for i in range(3)]
    slow = [f"s-{run}-{i}" for i in range(2)]
    with client(cfg) as infra:
        for t in quick:
            infra.submit_task(t, {"type": "sleep", "seconds": 4})
        for t in slow:
            infra.submit_task(t, {"type": "sleep", "seconds": 10})
        deadline = time.monotonic() + 30
        while {infra.get_task_status(t)["status"] for t in quick + slow} != {"running"}:
            assert time.monotonic() < deadline, "the tasks never all ran"
            time.sleep(0.05)
    stopped = cli(spec, "stop", "--drain-timeout", "8")
    assert stopped.returncode == 0, stopped.stderr
    assert "drained: 5 task(s) were running; 2 requeued for the next start" in stopped.stdout
    after = stored(cfg, quick + slow)
    assert {after[t]["status"] for t in quick} == {"completed"}, after  # ended within the drain
    for t in slow:  # handed back, durably, the attempt not counted
        assert after[t]["status"] == "pending" and after[t]["attempts"] == 0, after[t]
    start(spec)
    with client(cfg) as infra:
        done = infra.wait_tasks(slow, timeout=60)
    assert [(d["status"], d["attempts"]) for d in done] == [("completed", 1)] * 2


def test_a_drain_whose_stop_did_not_follow_is_undone_by_start(spec: RuntimeSpec) -> None:
    """A stop can fail after its drain (the head would not go down); the scheduler must not
    stay drained, dispatching nothing: the failed stop resumes it, and so does ``rayinfra
    start`` on the running runtime. Here the drain runs alone, as a failed stop leaves it."""
    start(spec)
    cfg = config(spec)
    run = uuid.uuid4().hex[:6]
    with client(cfg) as infra:
        infra.submit_task(f"r-{run}", {"type": "sleep", "seconds": 30})
        while infra.get_task_status(f"r-{run}")["status"] != "running":
            time.sleep(0.05)
        drain = (
            "import json, sys\nfrom rayinfra import runtime\n"
            f"print(json.dumps(runtime.drain(__import__('pathlib').Path({str(cfg.state.dir)!r}),"
            " timeout_s=0.5)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", drain], env=spec.env(), capture_output=True, text=True,
            timeout=120, check=True,
        )  # fmt: skip
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"running": 1, "requeued": 1}
        infra.submit_task(f"n-{run}", {"type": "noop"})
        time.sleep(2)  # drained: neither the handed-back task nor the new one is dispatched
        assert infra.get_task_status(f"r-{run}")["status"] == "pending"
        assert infra.get_task_status(f"n-{run}")["status"] == "pending"
        start(spec)  # already running: it resumes the scheduler
        assert infra.wait_task(f"n-{run}", timeout=60)["status"] == "completed"
        deadline = time.monotonic() + 30
        while infra.get_task_status(f"r-{run}")["status"] != "running":
            assert time.monotonic() < deadline, "the handed-back task never ran again"
            time.sleep(0.05)


def test_stop_force_does_not_wait_and_nothing_is_lost(spec: RuntimeSpec) -> None:
    start(spec)
    cfg = config(spec)
    tid = f"f-{uuid.uuid4().hex[:6]}"
    with client(cfg) as infra:
        infra.submit_task(tid, {"type": "sleep", "seconds": 3})
        while infra.get_task_status(tid)["status"] != "running":
            time.sleep(0.05)
    t0 = time.monotonic()
    stopped = cli(spec, "stop", "--force")
    assert stopped.returncode == 0, stopped.stderr
    assert "drained" not in stopped.stdout and "head stopped" in stopped.stdout
    assert time.monotonic() - t0 < 30
    # not finished, as it was (its row says pending until it ends): a start runs it again
    assert stored(cfg, [tid])[tid]["status"] in ("pending", "running")
    start(spec)
    with client(cfg) as infra:
        assert infra.wait_task(tid, timeout=60)["status"] == "completed"


def test_logs_follow_prints_new_lines_until_interrupted(spec: RuntimeSpec) -> None:
    start(spec)
    res = cli(spec, "services", "start", "ticker")
    assert res.returncode == 0, res.stdout + res.stderr
    follower = subprocess.Popen(
        [*RAYINFRA, "logs", "ticker", "--follow", "--tail", "1"],
        env=spec.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        ticks: list[int] = []
        deadline = time.monotonic() + 30
        while len(ticks) < 6 and time.monotonic() < deadline:
            line = follower.stdout.readline()
            if " tick " in f" {line}":
                ticks.append(int(line.rsplit("tick", 1)[1]))
        assert len(ticks) == 6, ticks
        assert ticks == list(range(ticks[0], ticks[0] + 6))  # new lines, in order, none lost
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=15)
    assert code == 0, follower.stderr.read() if follower.stderr else ""

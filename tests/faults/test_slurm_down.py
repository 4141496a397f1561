"""The Slurm controller goes down under a running ``gpu_slurm`` task, for real: the machine's
single-node Slurm (TESTING.md), ``slurmctld`` stopped by the pid in its ``SlurmctldPidFile`` and
started again with the argv it was started with. A runtime of this test's own.

While the controller is down: a new ``gpu_slurm`` submit is refused (gRPC FAILED_PRECONDITION,
naming slurmctld) with nothing queued, as docs/tasks.md says, once the runtime has seen the
controller down (it asks ``scontrol ping`` at most every 10 s while Slurm answered, and again at
once after any Slurm command of the runtime found the controller unreachable; a submit accepted
before that waits, pending, and runs once the controller is back); the running task is not
marked failed; CPU tasks go on being acknowledged and completed. Once slurmctld runs again the
task completes from the same job (one job in squeue), every acknowledged task completes and the
runtime answers Health.

Right after the controller died, inside the gateway's cached answer (``PING_OK_TTL_S``): the
first submits are accepted; none of them is sent to ``sbatch`` while the controller is down (the
scheduler asks ``scontrol ping`` before it dispatches on an answer older than
``PING_DISPATCH_TTL_S``): each stays pending and runs once it is back, in its first attempt, as
one job; and that ping ends the gateway's trust, so it refuses the next submit long before its
cached answer runs out.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from rayinfra.actors.gateway import token_path
from rayinfra.actors.slurm_pool import PING_DISPATCH_TTL_S, PING_OK_TTL_S
from rayinfra.api import stubs
from rayinfra.config import RayinfraConfig, dial_addr
from tests.support.faults import (
    TaskStream,
    assert_health,
    assert_none_lost,
    connected,
    events_of,
    grpc_client,
    runtime_of_its_own,
)
from tests.support.polling import wait_until
from tests.support.slurm import SlurmController

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

opb, opb_grpc = stubs.orchestrator()

SLURM_TOML = """
[slurm]
# jobs on the single-node Slurm (2 CPUs, no GPU), polled fast
task_values = { GPUS = 0, CPUS_PER_TASK = 1, MEMORY_GB = 1, TIME_LIMIT = "00:10:00" }
poll_interval_s = 0.2
poll_max_interval_s = 1.0
"""
#: the job's length: it ends while the controller is down
JOB_S = 12


@pytest.fixture
def controller() -> Iterator[SlurmController]:
    """The running slurmctld; afterwards it answers again, whatever the test did."""
    ctld = SlurmController.running()
    try:
        yield ctld
    finally:
        ctld.ensure_up()


@pytest.fixture
def cfg() -> Iterator[RayinfraConfig]:
    with runtime_of_its_own("slurmdown", SLURM_TOML) as config:
        yield config


def job_record(http: httpx.Client, task_id: str) -> dict[str, str] | None:
    """``GET /slurm/status/{task_id}``: the task's job record (None: no job yet)."""
    r = http.get(f"/slurm/status/{task_id}")
    return dict(r.json()) if r.status_code == 200 else None


def slurm_submit(task_id: str, argv: list[str]) -> Any:
    """A gRPC SubmitTask of a ``gpu_slurm`` task running ``argv``."""
    payload = {"argv": json.dumps(argv)}
    return opb.SubmitTaskRequest(id=task_id, payload=payload, **{"class": "gpu_slurm"})


@dataclass
class Clients:
    """The runtime as a test reaches it: AgentInfra, HTTP and the original's gRPC stub, all
    with the runtime's token."""

    infra: Any
    http: httpx.Client
    orch: Any
    auth: list[tuple[str, str]]

    def submit_until_refused(
        self, prefix: str, accepted: list[str], step_s: float
    ) -> tuple[str, str]:
        """Submit ``gpu_slurm`` tasks (``prefix-<n>``, each echoing ``after the outage <id>``)
        until one is refused with FAILED_PRECONDITION: that one's id and the refusal's
        details. Those accepted before it are appended to ``accepted``."""

        def refused() -> tuple[str, str] | None:
            task_id = f"{prefix}-{len(accepted)}"
            req = slurm_submit(task_id, ["echo", f"after the outage {task_id}"])
            try:
                self.orch.SubmitTask(req, timeout=60, metadata=self.auth)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
                return task_id, e.details() or ""
            accepted.append(task_id)
            return None

        task_id, details = wait_until("a gpu_slurm submit to be refused", refused, 60, step_s)
        assert "slurmctld" in details and "nothing was queued" in details, details
        with pytest.raises(grpc.RpcError) as missing:  # nothing of it was written
            self.orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=task_id), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        return task_id, details


@contextlib.contextmanager
def clients(cfg: RayinfraConfig) -> Iterator[Clients]:
    token = token_path(cfg).read_text().strip()
    auth = [("authorization", f"Bearer {token}")]
    base = f"http://{dial_addr(cfg.gateway.orchestrator_http_addr)}"
    with (
        connected(cfg) as infra,
        httpx.Client(base_url=base, timeout=60, headers=dict(auth)) as http,
        grpc.insecure_channel(dial_addr(cfg.gateway.orchestrator_grpc_addr)) as channel,
    ):
        yield Clients(infra, http, opb_grpc.OrchestratorServiceStub(channel), auth)


def jobs_named(task_id: str) -> list[str]:
    """The job ids Slurm has under the task's job name (squeue keeps ended jobs 300 s)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", f"rayinfra-{task_id}", "-o", "%i"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return out.stdout.split()


def test_the_controller_down_under_a_running_job(
    controller: SlurmController, cfg: RayinfraConfig
) -> None:
    run = uuid.uuid4().hex[:8]
    with clients(cfg) as c:
        infra, http = c.infra, c.http
        long = f"sd-long-{run}"
        script = f"sleep {JOB_S}; echo survived"
        infra.submit_task(long, {"argv": ["sh", "-c", script]}, task_class="gpu_slurm")
        job = wait_until(
            "the job to run",
            lambda: (r := job_record(http, long)) is not None and r["status"] == "running" and r,
            60,
        )
        started = time.monotonic()
        stream = TaskStream(lambda: grpc_client(cfg), f"sd-{run}", {"type": "noop"})
        stream.start()
        queued: list[str] = []  # gpu_slurm submits accepted before the runtime saw it down
        try:
            stream.wait_for(10)
            controller.stop()
            stopped = time.monotonic()
            c.submit_until_refused(f"sd-new-{run}", queued, 1.0)
            # the gateway trusts a ping that answered for PING_OK_TTL_S: no longer
            assert time.monotonic() - stopped < PING_OK_TTL_S + 5, queued
            # the running task is not failed while the controller is down, past its job's end
            while time.monotonic() - started < JOB_S + 3:
                assert infra.get_task_status(long)["status"] == "running"
                now = job_record(http, long)
                assert now is not None and (now["id"], now["state"]) == (job["id"], "running")
                time.sleep(0.5)
            in_outage = len(stream.acknowledged)
            stream.wait_for(in_outage + 10)  # CPU tasks go on being acknowledged
            controller.start()
            done = infra.wait_task(long, timeout=120)
        finally:
            ids = stream.stop()
        assert done["status"] == "completed", done
        assert done["attempts"] == 1, done
        result = done["result_payload"]
        assert result["slurm_job_id"] == job["id"] and result["stdout"] == "survived\n", result
        assert jobs_named(long) == [job["id"]]  # the same job: never submitted twice
        assert_none_lost(infra, ids + queued)
        assert_health(infra)
        print(f"{len(queued)} gpu_slurm submit(s) queued before the refusal; {len(ids)} CPU tasks")


def test_a_submit_right_after_the_controller_died(
    controller: SlurmController, cfg: RayinfraConfig
) -> None:
    run = uuid.uuid4().hex[:8]
    with clients(cfg) as c:
        infra, http = c.infra, c.http
        # the runtime's first gpu_slurm submit: the gateway asks `scontrol ping` now and trusts
        # the answer for PING_OK_TTL_S; the scheduler asks too, to dispatch it
        warm = f"sr-warm-{run}"
        pinged = time.monotonic()
        c.orch.SubmitTask(slurm_submit(warm, ["echo", "warm"]), timeout=60, metadata=c.auth)
        time.sleep(PING_DISPATCH_TTL_S + 0.5)  # the scheduler's answer is too old to dispatch on
        controller.stop()
        assert time.monotonic() - pinged < PING_OK_TTL_S / 2, "too slow to test inside the TTL"
        accepted: list[str] = []  # submits the gateway took on its cached answer
        _, details = c.submit_until_refused(f"sr-{run}", accepted, 0.1)
        refused_after = time.monotonic() - pinged
        # refused before the gateway's cached answer ran out: a command found the controller
        # unreachable (the scheduler's ping before dispatching the first accepted task)
        assert refused_after < PING_OK_TTL_S, (refused_after, accepted, details)
        assert accepted, "the gateway refused the first submit: it had not cached the answer"
        # what was accepted stays pending, never handed to sbatch, while the controller is down
        outage_end = time.monotonic() + 3 * PING_DISPATCH_TTL_S
        while time.monotonic() < outage_end:
            for t in accepted:
                assert infra.get_task_status(t)["status"] == "pending", t
                assert job_record(http, t) is None, t
            time.sleep(0.2)
        controller.start()
        done = infra.wait_tasks([warm, *accepted], timeout=120)
    by_id = {d["task_id"]: d for d in done}
    assert by_id[warm]["status"] == "completed", by_id[warm]
    for t in accepted:  # each ran once the controller was back, in its first attempt, one job
        d = by_id[t]
        assert d["status"] == "completed" and d["attempts"] == 1, d
        assert d["result_payload"]["stdout"] == f"after the outage {t}\n", d
        kinds = [kind for kind, _ in events_of(cfg, t)]
        assert kinds.count("task_started") == 1 and "task_retrying" not in kinds, kinds
        assert jobs_named(t) == [d["result_payload"]["slurm_job_id"]]
    with connected(cfg) as infra:
        assert_health(infra)
    print(f"{len(accepted)} submit(s) accepted, refused {refused_after:.2f} s after the ping")

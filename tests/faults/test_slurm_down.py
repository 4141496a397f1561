"""The Slurm controller goes down under a running ``gpu_slurm`` task, for real: the machine's
single-node Slurm (TESTING.md), ``slurmctld`` stopped by the pid in its ``SlurmctldPidFile`` and
started again with the argv it was started with. A runtime of this test's own.

While the controller is down: a new ``gpu_slurm`` submit is refused (gRPC FAILED_PRECONDITION,
naming slurmctld) with nothing queued, as docs/tasks.md says, once the runtime has seen the
controller down (it asks ``scontrol ping`` at most every 10 s while Slurm answered; a submit
accepted before that waits, queued, and runs once the controller is back); the running task is
not marked failed; CPU tasks go on being acknowledged and completed. Once slurmctld runs again
the task completes from the same job (one job in squeue), every acknowledged task completes and
the runtime answers Health.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from rayinfra.actors.gateway import token_path
from rayinfra.actors.slurm_pool import PING_OK_TTL_S
from rayinfra.api import stubs
from rayinfra.config import RayinfraConfig, dial_addr
from tests.support.faults import (
    TaskStream,
    assert_health,
    assert_none_lost,
    connected,
    grpc_client,
    runtime_of_its_own,
)
from tests.support.slurm import SlurmController, wait_for

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
    token = token_path(cfg).read_text().strip()
    auth = [("authorization", f"Bearer {token}")]
    base = f"http://{dial_addr(cfg.gateway.orchestrator_http_addr)}"
    with (
        connected(cfg) as infra,
        httpx.Client(base_url=base, timeout=60, headers=dict(auth)) as http,
        grpc.insecure_channel(dial_addr(cfg.gateway.orchestrator_grpc_addr)) as channel,
    ):
        orch = opb_grpc.OrchestratorServiceStub(channel)
        long = f"sd-long-{run}"
        script = f"sleep {JOB_S}; echo survived"
        infra.submit_task(long, {"argv": ["sh", "-c", script]}, task_class="gpu_slurm")
        job = wait_for(
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

            def refused() -> tuple[str, str] | None:
                task_id = f"sd-new-{run}-{len(queued)}"
                argv = json.dumps(["echo", "after the outage"])
                req = opb.SubmitTaskRequest(id=task_id, payload={"argv": argv},
                                            **{"class": "gpu_slurm"})  # fmt: skip
                try:
                    orch.SubmitTask(req, timeout=60, metadata=auth)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
                    return task_id, e.details() or ""
                queued.append(task_id)
                return None

            task_id, details = wait_for("a gpu_slurm submit to be refused", refused, 60, 1.0)
            assert "slurmctld" in details and "nothing was queued" in details, details
            with pytest.raises(grpc.RpcError) as missing:  # nothing of it was written
                orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=task_id), timeout=30)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
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

"""``gpu_slurm`` tasks as real Slurm jobs (the machine's single-node Slurm, TESTING.md), through
the Python client, gRPC and HTTP of the session runtime; each job is checked with Slurm's own
``scontrol``/``squeue``. The runtime's ``[slurm]`` settings are in ``tests/integration/conftest``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import ray

from rayinfra import AgentInfraSync, InvalidArgumentError, TaskNotFoundError
from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.config import NAMESPACE, dial_addr
from rayinfra.store import StateStore
from tests.integration.conftest import Runtime
from tests.support.polling import wait_until
from tests.support.slurm import require_slurm

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()

HOSTILE = ["it's", '"quoted"', "$(touch /tmp/rayinfra-pwned)", "; rm -rf /", "`id`", "a b"]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def infra(rt: Runtime) -> Iterator[AgentInfraSync]:
    require_slurm()
    client = AgentInfraSync(config=rt.config).start()
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture(scope="module")
def http(rt: Runtime) -> Iterator[httpx.Client]:
    base = f"http://{dial_addr(rt.config.gateway.orchestrator_http_addr)}"
    token = token_path(rt.config).read_text().strip()
    with httpx.Client(
        base_url=base, timeout=60, headers={"authorization": f"Bearer {token}"}
    ) as client:
        yield client


def scontrol(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (the job as Slurm itself reports it)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def slurm_record(http: httpx.Client, task_id: str) -> dict[str, Any]:
    r = http.get(f"/slurm/status/{task_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_task_runs_as_a_slurm_job_and_its_outcome_comes_back(
    infra: AgentInfraSync, http: httpx.Client
) -> None:
    ok, bad = uid("slurm-ok"), uid("slurm-bad")
    script = "echo out $RAYINFRA_TASK_ID; echo err >&2; exit ${1:-0}"
    infra.submit_tasks(
        [
            {"task_id": ok, "task_class": "gpu_slurm", "payload": {"argv": ["sh", "-c", script]}},
            {
                "task_id": bad,
                "task_class": "gpu_slurm",
                "payload": {"argv": ["sh", "-c", script, "sh", "3"]},
            },
        ]
    )
    done, failed = infra.wait_tasks([ok, bad], timeout=120)
    assert done["status"] == "completed", done
    res = done["result_payload"]
    assert res["exit_code"] == 0 and res["state"] == "completed"
    assert res["stdout"] == f"out {ok}\n" and res["stderr"].endswith("err\n")  # after a banner
    assert done["attempts"] == 1
    # Slurm itself ran it: the job it names completed, its output where the record says
    job = scontrol(res["slurm_job_id"])
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0"
    assert job["JobName"] == f"rayinfra-{ok}"
    assert Path(res["stdout_path"]).read_text() == f"out {ok}\n"
    # the failing one: failed, its exit code in the error and in the result kept with it
    assert failed["status"] == "failed", failed
    assert "exit code 3" in failed["error"] and failed["result_payload"]["exit_code"] == 3
    assert scontrol(failed["result_payload"]["slurm_job_id"])["ExitCode"] == "3:0"
    # the job record over HTTP: the original's keys and strings
    rec = slurm_record(http, ok)
    assert rec["id"] == res["slurm_job_id"] and rec["task_id"] == ok
    assert rec["status"] == "completed" and rec["exit_code"] == 0
    assert {"submit_time", "start_time", "end_time"} <= set(rec)
    bad_rec = slurm_record(http, bad)
    assert bad_rec["status"] == "failed" and bad_rec["exit_code"] == 3
    assert "exit code 3" in bad_rec["error"]
    # metrics
    text = http.get("/metrics").text
    for name in ("slurm_jobs_submitted_total", "slurm_jobs_completed_total",
                 "slurm_jobs_failed_total", "slurm_jobs_running", "slurm_job_failures_total"):  # fmt: skip
        assert f"\n{name}" in text, name


def test_http_submit_answers_with_the_job_and_scancel_from_outside_cancels(
    infra: AgentInfraSync, http: httpx.Client
) -> None:
    task_id = uid("slurm-http")
    r = http.post(
        "/queue/submit",
        json={"id": task_id, "class": "gpu_slurm", "payload": {"argv": ["sleep", "60"]}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["id"] == task_id and body["status"] == "submitted"
    job_id = body["slurm_job_id"]
    assert scontrol(job_id)["JobName"] == f"rayinfra-{task_id}"
    wait_until("the job to run", lambda: slurm_record(http, task_id)["status"] == "running", 60)
    assert infra.get_task_status(task_id)["status"] == "running"
    subprocess.run(["scancel", job_id], check=True)
    st = infra.wait_task(task_id, timeout=60)
    assert st["status"] == "cancelled", st
    assert "cancelled outside rayinfra" in st["error"]
    rec = slurm_record(http, task_id)
    assert rec["status"] == "failed" and rec["state"] == "cancelled"  # the original's string


def test_cancel_and_timeout_scancel_the_job(infra: AgentInfraSync, rt: Runtime) -> None:
    cancelled, slow = uid("slurm-cancel"), uid("slurm-timeout")
    infra.submit_task(cancelled, {"argv": ["sleep", "120"]}, task_class="gpu_slurm")
    infra.submit_task(slow, {"argv": ["sleep", "120"]}, task_class="gpu_slurm", timeout_s=2)

    def job_of(task_id: str) -> str | None:
        with StateStore(rt.config.state.db_path) as store:
            rec = store.kv_get("slurm_jobs", task_id)
        return None if rec is None else str(rec["job_id"])

    job = wait_until("the job of the task to cancel", lambda: job_of(cancelled), 60)
    wait_until("it to run", lambda: infra.get_task_status(cancelled)["status"] == "running", 60)
    reply = infra.cancel_task(cancelled)
    assert reply["cancelled"] is True, reply
    assert infra.get_task_status(cancelled)["status"] == "cancelled"
    assert scontrol(job)["JobState"] == "CANCELLED"

    st = infra.wait_task(slow, timeout=90)
    assert st["status"] == "failed" and "timed out after 2s" in st["error"], st
    assert scontrol(st["result_payload"]["slurm_job_id"])["JobState"] == "CANCELLED"


def test_hostile_values_are_data_or_refused(infra: AgentInfraSync, http: httpx.Client) -> None:
    task_id = uid("slurm-hostile")
    infra.submit_task(
        task_id,
        {"argv": ["printf", "%s\\n", *HOSTILE], "env": {"HOSTILE": "$(id); rm -rf /"}},
        task_class="gpu_slurm",
    )
    st = infra.wait_task(task_id, timeout=120)
    assert st["status"] == "completed", st
    assert st["result_payload"]["stdout"] == "".join(f"{h}\n" for h in HOSTILE)
    assert not Path("/tmp/rayinfra-pwned").exists()
    # values that reach an #SBATCH line or the template's variables are checked at admission
    for payload, field in (
        ({"argv": ["true"], "log_dir": "/tmp/x; rm -rf /"}, "payload.log_dir"),
        ({"argv": ["true"], "time_limit": "$(reboot)"}, "payload.time_limit"),
        ({"argv": ["true"], "nodes": "1; rm"}, "payload.nodes"),
        ({"argv": "echo hi; rm -rf /"}, "payload.argv"),
        ({"command": ["true"], "template": "../../etc/passwd"}, "payload.template"),
        ({}, "payload.argv"),
    ):
        refused = uid("slurm-refused")
        with pytest.raises(InvalidArgumentError) as e:
            infra.submit_task(refused, payload, task_class="gpu_slurm")
        assert e.value.field == field, (payload, e.value)
        with pytest.raises(TaskNotFoundError):
            infra.get_task_status(refused)  # nothing queued
        r = http.post(
            "/queue/submit", json={"id": refused, "class": "gpu_slurm", "payload": payload}
        )
        assert r.status_code == 400 and r.json()["field"] == field, r.text


def test_grpc_routes_gpu_slurm_the_same_way(rt: Runtime, infra: AgentInfraSync) -> None:
    token = token_path(rt.config).read_text().strip()
    with grpc.insecure_channel(dial_addr(rt.config.gateway.orchestrator_grpc_addr)) as ch:
        orch = opb_grpc.OrchestratorServiceStub(ch)
        task_id = uid("slurm-grpc")
        req = opb.SubmitTaskRequest(
            id=task_id, payload={"argv": json.dumps(["echo", "via grpc"])}, **{"class": "gpu_slurm"}
        )
        with pytest.raises(grpc.RpcError) as denied:  # a Slurm job runs commands: token needed
            orch.SubmitTask(req, timeout=30)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "gpu_slurm" in (denied.value.details() or "")
        resp = orch.SubmitTask(req, timeout=30, metadata=[("authorization", f"Bearer {token}")])
        assert resp.success and resp.task_id == task_id
        st = infra.wait_task(task_id, timeout=120)
        assert st["status"] == "completed" and st["result_payload"]["stdout"] == "via grpc\n"
        status = orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=task_id), timeout=30)
        assert status.status == "completed"


def test_a_restarted_scheduler_adopts_the_running_job(
    infra: AgentInfraSync, http: httpx.Client
) -> None:
    task_id = uid("slurm-adopt")
    infra.submit_task(task_id, {"argv": ["sh", "-c", "sleep 4; echo survived"]}, "gpu_slurm")
    wait_until("the job to run", lambda: slurm_record_or_none(http, task_id), 60)
    job_id = slurm_record(http, task_id)["id"]
    ray.kill(ray.get_actor("scheduler", namespace=NAMESPACE), no_restart=False)
    st = infra.wait_task(task_id, timeout=120)
    assert st["status"] == "completed", st
    assert st["attempts"] == 1 and st["result_payload"]["slurm_job_id"] == job_id  # one job
    assert st["result_payload"]["stdout"] == "survived\n"
    jobs = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", f"rayinfra-{task_id}", "-o", "%i"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert jobs == [job_id]  # never submitted twice


def slurm_record_or_none(http: httpx.Client, task_id: str) -> bool:
    r = http.get(f"/slurm/status/{task_id}")
    return r.status_code == 200 and r.json()["status"] == "running"

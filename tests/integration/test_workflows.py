"""Workflows on the session runtime: real steps (tasks through the scheduler), through the Python
client over both transports, gRPC and HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import ray

from rayinfra import AgentInfraSync, InvalidArgumentError
from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.client.grpc_transport import GrpcTransport
from rayinfra.config import NAMESPACE, dial_addr
from rayinfra.errors import NotTrustedError, WorkflowNotFoundError, WorkflowRunNotFoundError
from tests.integration.conftest import Runtime
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def task(node_id: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": node_id.upper(),
        "type": "task",
        "task": {"class": "cpu_short", "payload": payload, **extra},
    }


def edges(*pairs: str) -> list[dict[str, str]]:
    return [{"source": p[0], "target": p[1]} for p in pairs]


def when(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture(scope="module", params=["actors", "grpc"])
def infra(rt: Runtime, request: pytest.FixtureRequest) -> Iterator[AgentInfraSync]:
    if request.param == "actors":
        client = AgentInfraSync(config=rt.config)
    else:
        token = token_path(rt.config).read_text().strip()
        addr = dial_addr(rt.config.gateway.orchestrator_grpc_addr)
        client = AgentInfraSync(transport=GrpcTransport(addr, token=token))
    client.start()
    try:
        yield client
    finally:
        client.stop()


def wait_run(infra: AgentInfraSync, run_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = infra.get_workflow_run(run_id)
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(f"run {run_id} to end", ended, timeout, 0.2)


def test_a_diamond_runs_its_branches_at_once_and_passes_results(infra: AgentInfraSync) -> None:
    wf = infra.create_workflow(
        {
            "name": uid("diamond"),
            "nodes": [
                task("a", {"type": "echo", "x": "${input.x}"}),
                task("b", {"type": "sleep", "seconds": 1.5}),
                task("c", {"type": "sleep", "seconds": 1.5}),
                task("d", {"type": "echo", "got": "${steps.a.result.x}", "b": "${steps.b.result}"}),
            ],
            "edges": edges("ab", "ac", "bd", "cd"),
        }
    )
    run = infra.start_workflow_run(wf["id"], {"x": [1, 2]})
    assert run["status"] in ("pending", "running") and run["reused"] is False
    seen = list(infra.stream_workflow_status(run["id"]))
    assert seen[-1]["status"] == "completed" and seen[-1]["steps_completed"] == 4
    assert seen[-1]["output"] == {"d": {"got": [1, 2], "b": {"slept": 1.5}}}
    assert any(u["current_step"] == "b,c" for u in seen)  # both branches running at once
    done = wait_run(infra, run["id"])
    steps = {s["node_id"]: s for s in done["steps"]}
    assert done["status"] == "succeeded" and {s["status"] for s in steps.values()} == {"succeeded"}
    b, c = steps["b"], steps["c"]
    overlap = min(when(b["completed_at"]), when(c["completed_at"])) - max(
        when(b["started_at"]), when(c["started_at"])
    )
    assert overlap > 1.0, (b, c)  # concurrent, not one after the other
    assert when(steps["d"]["started_at"]) >= max(when(b["completed_at"]), when(c["completed_at"]))
    assert infra.get_task_status(steps["a"]["task_id"])["status"] == "completed"  # real tasks


def test_a_failing_step_retries_then_fails_the_run_and_skips_its_dependants(
    infra: AgentInfraSync,
) -> None:
    wf = infra.create_workflow(
        {
            "name": uid("failing"),
            "nodes": [
                task("ok", {"type": "noop"}),
                task("bad", {"type": "no-such-handler"}, retries=2),
                task("after", {"type": "noop"}),
                task("side", {"type": "noop"}),
            ],
            "edges": edges(("ok", "bad"), ("bad", "after"), ("ok", "side")),
        }
    )
    run = wait_run(infra, infra.start_workflow_run(wf["id"])["id"])
    steps = {s["node_id"]: s for s in run["steps"]}
    assert run["status"] == "failed" and "step bad failed" in run["error"]
    assert steps["bad"]["status"] == "failed" and steps["bad"]["attempts"] == 3
    assert "no-such-handler" in steps["bad"]["error"]
    assert steps["after"]["status"] == "skipped" and steps["side"]["status"] == "succeeded"
    assert steps["bad"]["task_id"].endswith(".bad.3")  # one task per attempt


def test_the_same_idempotency_key_returns_the_same_run(infra: AgentInfraSync) -> None:
    wf = infra.create_workflow({"name": uid("idem"), "nodes": [task("only", {"type": "noop"})]})
    first = infra.start_workflow_run(wf["id"], {"n": 1}, idempotency_key="k-1")
    again = infra.start_workflow_run(wf["id"], {"n": 2}, idempotency_key="k-1")
    other = infra.start_workflow_run(wf["id"], {"n": 3}, idempotency_key="k-2")
    assert again["id"] == first["id"] and again["reused"] is True and again["input"] == {"n": 1}
    assert other["id"] != first["id"]
    assert wait_run(infra, first["id"])["status"] == "succeeded"  # a one-node workflow runs


def test_cancel_cancels_the_running_step(infra: AgentInfraSync) -> None:
    wf = infra.create_workflow(
        {
            "name": uid("cancel"),
            "nodes": [
                task("slow", {"type": "sleep", "seconds": 60}),
                task("next", {"type": "noop"}),
            ],
            "edges": edges(("slow", "next")),
        }
    )
    run = infra.start_workflow_run(wf["id"])
    step = wait_until(
        "the first step to run",
        lambda: (s := infra.get_workflow_run(run["id"])["steps"][0])["status"] == "running" and s,
    )
    task_id = step["task_id"]
    wait_until("its task to run", lambda: infra.get_task_status(task_id)["status"] == "running")
    cancelled = infra.cancel_workflow_run(run["id"])
    assert cancelled["status"] == "cancelled"
    assert infra.wait_task(task_id, timeout=30)["status"] == "cancelled"
    final = wait_run(infra, run["id"])
    assert [s["status"] for s in final["steps"]] == ["cancelled", "cancelled"]


def test_bad_specs_and_unknown_ids_are_named(infra: AgentInfraSync) -> None:
    cases = [
        ({"name": "x", "nodes": [task("a", {}), task("b", {})], "edges": edges("ab", "ba")},
         "edges", "cycle: a -> b -> a"),
        ({"name": "x", "nodes": [task("a", {})], "edges": edges("aa")}, "edges", "a -> a"),
        ({"name": "x", "nodes": [{"id": "a", "name": "A", "type": "task",
                                  "task": {"class": "nope"}}]}, "nodes[0].task.class", "nope"),
        ({"name": "x", "nodes": [{"id": "a", "name": "A", "type": "wizard"}]},
         "nodes[0].type", "signature"),
        ({"name": "x", "nodes": [task("a", {"v": "${steps.ghost.result}"})]},
         "nodes[0].task.payload", "ghost"),
        ({"name": "x", "nodes": []}, "nodes", "at least 1"),
        ({"name": "x", "nodes": [task("a", {})], "edges": edges("az")}, "edges[0].target", "'z'"),
    ]  # fmt: skip
    for spec, field, text in cases:
        with pytest.raises(InvalidArgumentError) as e:
            infra.create_workflow(spec)
        assert e.value.field == field and text in e.value.message, (spec, e.value)
    with pytest.raises(WorkflowNotFoundError):
        infra.start_workflow_run("wf-no-such")
    with pytest.raises(WorkflowRunNotFoundError):
        infra.get_workflow_run("run-no-such")


def test_killing_the_workflows_actor_mid_run_reruns_no_succeeded_step(
    infra: AgentInfraSync, tmp_path: Path
) -> None:
    """Each step appends its id to a file when it runs: after the actor is killed (and
    restarted by Ray) in the middle of the run, it finishes and each step ran once."""
    log = tmp_path / "ran.log"

    def mark(node_id: str, seconds: float) -> dict[str, Any]:
        argv = ["sh", "-c", f"echo {node_id} >> {log}; sleep {seconds}"]
        return task(node_id, {"type": "shell", "argv": argv})

    wf = infra.create_workflow(
        {
            "name": uid("resume"),
            "nodes": [mark("s1", 0), mark("s2", 2), mark("s3", 0), mark("s4", 0)],
            "edges": edges(("s1", "s2"), ("s2", "s3"), ("s3", "s4")),
        }
    )
    run = infra.start_workflow_run(wf["id"])
    wait_until("s2 to start", lambda: "s2" in (log.read_text() if log.exists() else ""), 30, 0.05)
    ray.kill(ray.get_actor("workflows", namespace=NAMESPACE), no_restart=False)
    final = wait_run(infra, run["id"], timeout=120)
    assert final["status"] == "succeeded", final
    assert log.read_text().split() == ["s1", "s2", "s3", "s4"]  # each exactly once
    assert [s["attempts"] for s in final["steps"]] == [1, 1, 1, 1]


def test_grpc_and_http_routes(rt: Runtime) -> None:
    token = token_path(rt.config).read_text().strip()
    auth = {"authorization": f"Bearer {token}"}
    base = f"http://{dial_addr(rt.config.gateway.orchestrator_http_addr)}"
    spec = {"name": uid("routes"), "nodes": [task("a", {"type": "echo", "v": "${input.v}"})]}
    with httpx.Client(base_url=base, timeout=60) as http:
        created = http.post("/workflows", json=spec)
        assert created.status_code == 201, created.text
        wf_id = created.json()["id"]
        assert wf_id.startswith("wf-") and created.json()["created_at"]
        assert any(w["id"] == wf_id for w in http.get("/workflows").json()["items"])
        assert http.get(f"/workflows/{wf_id}").json()["nodes"][0]["id"] == "a"
        put = http.put(f"/workflows/{wf_id}", json={**spec, "description": "v2"})
        assert put.status_code == 200 and put.json()["description"] == "v2"
        assert len(http.get(f"/workflows/{wf_id}/history").json()["items"]) == 1
        bad = http.post("/workflows", json={"name": "x", "nodes": [task("a", {})],
                                            "edges": edges("aa")})  # fmt: skip
        assert bad.status_code == 400 and bad.json()["field"] == "edges"
        shell = {"name": "x", "nodes": [task("a", {"type": "shell", "argv": ["true"]})]}
        denied = http.post("/workflows", json=shell)  # no token: may not run code
        assert denied.status_code == 403 and denied.json()["field"] == "nodes[0].task.payload.type"
        assert http.post("/workflows", json=shell, headers=auth).status_code == 201
        assert http.put("/workflows/wf-none", json=spec).status_code == 404
        assert http.post("/workflows/wf-none/runs", json={}).status_code == 404
        run = http.post(f"/workflows/{wf_id}/runs", json={"idempotency_key": "h1",
                                                         "input": {"v": 7}}).json()  # fmt: skip
        assert run["status"] in ("pending", "running", "succeeded")
        rec = wait_until(
            "the run to succeed",
            lambda: (
                (r := http.get(f"/workflow-runs/{run['id']}").json())["status"] == "succeeded" and r
            ),
            60,
            0.2,
        )
        assert rec["steps"][0]["result"] == {"v": 7}
        listed = http.get(f"/workflows/{wf_id}/runs", params={"limit": 5}).json()["items"]
        assert [r["id"] for r in listed] == [run["id"]]
        assert http.get("/workflow-runs/run-none").status_code == 404
        metrics = http.get("/metrics").text
        total = next(ln for ln in metrics.splitlines() if ln.startswith("workflows_total "))
        assert float(total.split()[1]) >= 2  # this test's two, and the other tests'
        assert 'workflow_runs_total{status="succeeded"}' in metrics
        assert 'workflow_steps_total{status="succeeded"}' in metrics
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/workflows", "/workflows/{workflow_id}/runs", "/workflow-runs/{run_id}"} <= set(
            paths
        )
    with grpc.insecure_channel(dial_addr(rt.config.gateway.orchestrator_grpc_addr)) as ch:
        orch = opb_grpc.OrchestratorServiceStub(ch)
        cyc = {"name": "x", "nodes": [task("a", {}), task("b", {})], "edges": edges("ab", "ba")}
        with pytest.raises(grpc.RpcError) as e:
            orch.CreateWorkflow(opb.CreateWorkflowRequest(spec=json.dumps(cyc).encode()))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "a -> b -> a" in (e.value.details() or "")
        made = orch.CreateWorkflow(
            opb.CreateWorkflowRequest(
                name="from-grpc", spec=json.dumps({"nodes": spec["nodes"]}).encode()
            )
        )
        assert made.success and json.loads(made.workflow_json)["name"] == "from-grpc"
        started = orch.StartWorkflowRun(
            # decoded as the original server did: a plain word is a string (docs/api.md)
            opb.StartWorkflowRunRequest(workflow_id=made.workflow_id, input={"v": "s"})
        )
        updates = list(
            orch.StreamWorkflowStatus(opb.StreamWorkflowStatusRequest(run_id=started.run_id))
        )
        assert updates[-1].status == "completed" and updates[-1].total_steps == 1
        assert json.loads(updates[-1].output["a"]) == {"v": "s"}
        with pytest.raises(grpc.RpcError) as gone:
            list(orch.StreamWorkflowStatus(opb.StreamWorkflowStatusRequest(run_id="run-none")))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_untrusted_grpc_caller_cannot_create_a_workflow_that_runs_code(rt: Runtime) -> None:
    addr = dial_addr(rt.config.gateway.orchestrator_grpc_addr)
    with AgentInfraSync(transport=GrpcTransport(addr, token="")) as infra:
        with pytest.raises(NotTrustedError) as e:
            infra.create_workflow(
                {"name": "x", "nodes": [task("a", {"type": "python", "function": "os:getcwd"})]}
            )
        assert e.value.field == "nodes[0].task.payload.type"


def test_a_hundred_runs_of_five_steps_complete(infra: AgentInfraSync) -> None:
    """The CI-sized version of bench/bench_workflows.py (1000 x 5 there)."""
    chain = [task(f"s{i}", {"type": "echo", "i": i}) for i in range(5)]
    wf = infra.create_workflow(
        {
            "name": uid("hundred"),
            "nodes": chain,
            "edges": [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(4)],
        }
    )
    runs = [infra.start_workflow_run(wf["id"], {"n": n}) for n in range(100)]
    finals = [wait_run(infra, r["id"], timeout=180) for r in runs]
    assert {f["status"] for f in finals} == {"succeeded"}
    assert all(len(f["steps"]) == 5 and f["steps"][-1]["result"] == {"i": 4} for f in finals)

"""The pure half of workflows: spec validation, references, the run state machine.

The same on a real runtime: tests/integration/test_workflows.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from rayinfra.workflows.runs import Run, new_run, resolve, runs_code, step_task
from rayinfra.workflows.spec import SpecError, Workflow, parse_workflow

CLASSES = ["cpu_short", "cpu_long", "gpu_short", "gpu_slurm"]


def task(node_id: str, payload: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"class": "cpu_short", "payload": payload or {"type": "noop"}, **extra}
    return {"id": node_id, "name": node_id.upper(), "type": "task", "task": body}


def wf(*nodes: dict[str, Any], edges: str = "") -> Workflow:
    pairs = [{"source": p[0], "target": p[1]} for p in edges.split()]
    return parse_workflow({"name": "w", "nodes": list(nodes), "edges": pairs}, classes=CLASSES)


def test_the_originals_json_is_accepted_as_is() -> None:
    original = {
        "id": "wf-0123456789abcdef", "name": "agent", "tags": ["b", "a"], "tenant": "t",
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-02T00:00:00Z",
        "nodes": [
            {"id": "sig", "name": "Sig", "type": "signature", "position": {"x": 1, "y": 2},
             "signature": {"prompt": "p", "tools": ["t"], "execution_domain": "gpu"}},
            {"id": "ver", "name": "Ver", "type": "verifier", "verifier": {"command": "pytest"}},
            {"id": "rew", "name": "Rew", "type": "reward", "reward": {"metric": "acc"}},
            {"id": "tr", "name": "Tr", "type": "training",
             "training": {"method": "grpo", "skill": "s"}},
            {"id": "dep", "name": "Dep", "type": "deployment",
             "deployment": {"tenant": "t", "domain": "d", "channel": "c"}},
            {"id": "cus", "name": "Cus", "type": "custom", "custom": {"anything": 1}},
        ],
        "edges": [{"id": "e1", "source": "sig", "target": "ver", "kind": "data"},
                  {"id": "e2", "source": "ver", "target": "rew", "kind": "reward"}],
    }  # fmt: skip
    w = parse_workflow(original)
    assert w.tags == ["a", "b"] and w.order()[:3] == ["cus", "dep", "sig"]
    assert w.parents()["rew"] == ["ver"]


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"name": "", "nodes": [task("a")]}, "name", "at least 1"),
        ({"name": "w", "nodes": [task("a"), task("a")]}, "nodes[1].id", "also nodes[0].id"),
        ({"name": "w", "nodes": [task("a", klass="x")]}, "nodes[0].task.klass", "Extra inputs"),
        ({"name": "w", "nodes": [task("a", timeout_s=0)]}, "nodes[0].task.timeout_s", "greater"),
        ({"name": "w", "nodes": [{"id": "a", "name": "A", "type": "reward", "reward": {}}]},
         "nodes[0].reward.metric", "required"),
        ({"name": "w", "nodes": [{"id": "a b", "name": "A", "type": "custom", "custom": {"k": 1}}]},
         "nodes[0].id", "A-Za-z0-9"),
        ({"name": "w", "nodes": [task("a"), task("b", {"v": "${steps.c.result}"}), task("c")],
          "edges": [{"source": "a", "target": "b"}]}, "nodes[1].task.payload",
         "'c' does not run before 'b'"),
    ],
)  # fmt: skip
def test_errors_name_the_path(spec: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_workflow(spec, classes=CLASSES)
    assert e.value.field == field and text in e.value.message, e.value


def test_references_take_json_values_whole_and_text_inside_strings() -> None:
    results = {"a": {"x": [1, 2], "name": "n"}}
    payload = {"whole": "${steps.a.result.x}", "text": "got ${steps.a.result.name}/${input.k}",
               "deep": ["${steps.a.result.x.1}", {"k": "${input.k}"}], "plain": 3}  # fmt: skip
    assert resolve(payload, {"k": "v"}, results) == {
        "whole": [1, 2], "text": "got n/v", "deep": [2, {"k": "v"}], "plain": 3,
    }  # fmt: skip
    with pytest.raises(KeyError, match="missing"):
        resolve("${input.missing}", {}, {})


def run_of(w: Workflow, **retries: int) -> Run:
    run = new_run(w, {"k": 1}, "", now=100.0)
    run.retries.update(retries)
    return run


def started(run: Run, now: float) -> list[str]:
    decision = run.advance(now)
    for n in decision.submit:
        run.started(n, run.next_task_id(n), "cpu_short", now)
    return decision.submit


def test_a_diamond_starts_both_branches_then_the_join() -> None:
    run = run_of(wf(task("a"), task("b"), task("c"), task("d"), edges="ab ac bd cd"))
    assert started(run, 100.0) == ["a"] and run.status == "running"
    d = run.task_ended("run.a.1".replace("run", run.id), "completed", {"x": 1}, "", 101.0)
    assert d.submit == ["b", "c"]
    for n in d.submit:
        run.started(n, run.next_task_id(n), "cpu_short", 101.0)
    assert run.task_ended(f"{run.id}.b.1", "completed", 1, "", 102.0).submit == []
    last = run.task_ended(f"{run.id}.c.1", "completed", 2, "", 103.0)
    assert last.submit == ["d"]
    run.started("d", run.next_task_id("d"), "cpu_short", 103.0)
    end = run.task_ended(f"{run.id}.d.1", "completed", 3, "", 104.0)
    assert run.status == "succeeded" and ("workflow_completed" in [t for t, _ in end.events])
    assert run.progress()["status"] == "completed" and run.progress()["output"] == {"d": 3}


def test_retries_back_off_then_the_failure_skips_dependants_only() -> None:
    run = run_of(wf(task("a"), task("b"), task("side"), edges="ab"), a=1)
    assert started(run, 100.0) == ["a", "side"]
    retry = run.task_ended(f"{run.id}.a.1", "failed", None, "boom", 101.0)
    assert retry.submit == [] and retry.retry_at == 102.0  # 1 s backoff
    assert run.advance(101.5).submit == []
    assert started(run, 102.0) == ["a"] and run.steps["a"].attempts == 2
    assert run.steps["a"].task_id == f"{run.id}.a.2"
    run.task_ended(f"{run.id}.a.2", "failed", None, "boom again", 103.0)
    assert run.steps["b"].status == "skipped" and run.status == "running"  # side still runs
    run.task_ended(f"{run.id}.side.1", "completed", None, "", 104.0)
    assert run.status == "failed" and run.error == "step a failed: boom again"


def test_cancel_stops_everything_and_late_ends_are_stale() -> None:
    run = run_of(wf(task("a"), task("b"), edges="ab"))
    started(run, 100.0)
    d = run.cancel(101.0)
    assert d.cancel == [f"{run.id}.a.1"] and run.status == "cancelled"
    assert {s.status for s in run.steps.values()} == {"cancelled"}
    assert run.task_ended(f"{run.id}.a.1", "completed", 1, "", 102.0).events == []


def test_the_record_round_trips_and_an_unsubmitted_attempt_goes_again() -> None:
    run = run_of(wf(task("a")))
    started(run, 100.0)
    again = Run.from_dict(run.to_dict())
    assert again.record() == run.record()
    again.unsubmitted(f"{run.id}.a.1", retry_at=100.0)
    assert started(again, 100.0) == ["a"] and again.steps["a"].task_id == f"{run.id}.a.1"


def test_node_types_map_to_classes_and_handlers() -> None:
    sig = {"id": "s", "name": "S", "type": "signature",
           "signature": {"prompt": "p", "execution_domain": "cuda"}}  # fmt: skip
    train = {"id": "t", "name": "T", "type": "training",
             "training": {"method": "rl", "skill": "k"}}  # fmt: skip
    w = wf(sig, train, task("x", {"type": "shell", "argv": ["true"]}))
    run = run_of(w)
    assert step_task(w.node("s"), run, {}, slurm=False).task_class == "gpu_short"
    assert step_task(w.node("s"), run, {}, slurm=True).task_class == "gpu_slurm"
    on_slurm = step_task(w.node("t"), run, {}, slurm=True)
    assert on_slurm.task_class == "gpu_slurm" and on_slurm.payload["method"] == "rl"
    off = step_task(w.node("t"), run, {}, slurm=False)
    assert (off.task_class, off.payload["type"]) == ("gpu_short", "training")
    assert runs_code(w, slurm=False) == "nodes[2].task.payload.type"
    assert runs_code(wf(sig), slurm=True) == "nodes[0].type"
    assert runs_code(wf(sig), slurm=False) is None

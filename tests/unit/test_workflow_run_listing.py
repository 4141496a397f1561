"""``RunStore.of_workflow`` (what ``GET /workflows/{id}/runs`` and ``ListWorkflowRuns`` read) on a
real state store: one workflow's runs, newest first, at most ``limit``, the same as filtering
and sorting every run in Python (ties in ``created_at`` by run id), without decoding the others."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from rayinfra.store import StateStore
from rayinfra.workflows.runs import Run, new_run
from rayinfra.workflows.spec import Workflow, parse_workflow
from rayinfra.workflows.store import RunStore


def _workflow(name: str) -> Workflow:
    return parse_workflow(
        {"id": name, "name": name,
         "nodes": [{"id": "a", "name": "a", "type": "task", "task": {"class": "c"}}]}
    )  # fmt: skip


def _expected(runs: list[Run], workflow_id: str, limit: int) -> list[str]:
    mine = sorted((r for r in runs if r.workflow_id == workflow_id), key=lambda r: r.id)
    mine.sort(key=lambda r: r.created_at, reverse=True)  # stable: ties stay by id
    return [r.id for r in mine[:limit]]


@pytest.mark.parametrize("limit", [1, 3, 50, 1000])
def test_a_workflows_runs_newest_first_as_sorting_them_all_would_give(
    tmp_path: Path, limit: int
) -> None:
    rnd = random.Random(limit)
    wfs = {name: _workflow(name) for name in ("wf-a", "wf-b", "wf-a-b")}
    runs = []
    for i in range(120):
        name = rnd.choice(sorted(wfs))
        # whole seconds, so that runs share a created_at
        runs.append(new_run(wfs[name], {"i": i}, f"k{i}", now=1_000.0 + rnd.randrange(40)))
    with StateStore(tmp_path / "state.db") as s:
        store = RunStore(s)
        asyncio.run(store.save(runs))
        for wf in ("wf-a", "wf-b", "wf-a-b", "wf-none"):
            got = store.of_workflow(wf, limit)
            assert [r.id for r in got] == _expected(runs, wf, limit)
            assert all(isinstance(r, Run) and r.workflow_id == wf for r in got)
            by_id = {r.id: r for r in runs}
            assert all(r.to_dict() == by_id[r.id].to_dict() for r in got)  # whole records


def test_what_a_restarted_engine_takes_up_is_every_run_not_finished(tmp_path: Path) -> None:
    wf = _workflow("wf")
    runs = []
    for i, status in enumerate(["pending", "running", "succeeded", "failed", "cancelled"] * 3):
        r = new_run(wf, {}, f"k{i}", now=1_000.0 + i)
        r.status = status
        runs.append(r)
    with StateStore(tmp_path / "state.db") as s:
        store = RunStore(s)
        asyncio.run(store.save(runs))
        want = sorted(r.id for r in runs if r.status in ("pending", "running"))
        assert [r.id for r in store.unfinished()] == want
        assert [r.id for r in store.all()] == sorted(r.id for r in runs)

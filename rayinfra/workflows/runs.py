"""Workflow runs: the record, its steps, and every decision about them (pure: no I/O, clocks
passed in), shaped like the scheduler's state machine.

A run's steps are its workflow's nodes. A step is ``pending`` until every parent succeeded, then
its task is submitted (``running``, one task per attempt, id ``<run id>.<node id>.<attempt>``:
admission is idempotent, so a resubmit after a crash never runs an attempt twice); it ends
``succeeded``, or ``failed`` once its retries are spent (each retry after a capped exponential
backoff), or ``skipped`` when an ancestor failed or the run was cancelled. The run is
``succeeded`` when every step succeeded, ``failed`` when a step failed (and nothing is still
running), ``cancelled`` on request. Status strings are the original's (``succeeded``); the gRPC
stream says ``completed`` for it (:data:`WIRE_STATUS`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rayinfra.scheduling.tasks import TRUSTED_TYPES
from rayinfra.workflows.spec import REFERENCE, Node, Workflow

__all__ = [
    "RUN_TERMINAL",
    "WIRE_STATUS",
    "Decision",
    "Run",
    "StepTask",
    "new_run",
    "resolve",
    "runs_code",
    "step_task",
]

RUN_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
STEP_TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})
WIRE_STATUS = {"succeeded": "completed"}  # the proto's word for it; the others are the same
RETRY_BACKOFF_S = 1.0
RETRY_BACKOFF_MAX_S = 30.0
GPU_DOMAINS = frozenset({"gpu", "cuda", "accelerated"})


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def task_id_of(run_id: str, node_id: str, attempt: int) -> str:
    return f"{run_id}.{node_id}.{attempt}"


# ------------------------------------------------------------------------------ node -> task


@dataclass(frozen=True)
class StepTask:
    """The task a step's attempt submits."""

    task_class: str
    payload: dict[str, Any]
    priority: int = 0
    timeout_s: float | None = None
    retries: int = 0


def _lookup(root: Any, path: list[str], where: str) -> Any:
    value = root
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(f"${{{where}}}: {part!r} is not there")
    return value


def resolve(value: Any, run_input: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
    """``value`` with its ``${input.x}`` / ``${steps.<id>.result.y}`` references filled in: a
    string that is exactly one reference takes the referenced JSON value; inside longer text a
    value is inserted as text (JSON for objects). KeyError names a missing one."""
    if isinstance(value, Mapping):
        return {k: resolve(v, run_input, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, run_input, results) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def get(scope: str, path: str) -> Any:
        parts = path.split(".")
        if scope == "input":
            return _lookup(run_input, parts, f"input.{path}")
        step, rest = parts[0], parts[1:]
        if rest[:1] == ["result"]:
            rest = rest[1:]
        return _lookup(results.get(step), rest, f"steps.{path}")

    whole = REFERENCE.fullmatch(value)
    if whole:
        return get(whole.group(1), whole.group(2))

    def text(m: Any) -> str:
        got = get(m.group(1), m.group(2))
        return got if isinstance(got, str) else json.dumps(got, separators=(",", ":"))

    return REFERENCE.sub(text, value)


def step_task(node: Node, run: Run, results: Mapping[str, Any], *, slurm: bool) -> StepTask:
    """The task of ``node`` in ``run``. A ``task`` node's own; the original's node types run as
    tasks of their handler (``[handlers] <type> = "pkg.mod:fn"``, called with the payload; a
    missing one fails the step naming it): ``signature`` on a GPU class when its
    ``execution_domain`` is gpu/cuda/accelerated (``gpu_slurm`` with ``slurm``), else
    ``cpu_long`` / ``cpu_short``; ``training`` as a ``gpu_slurm`` job with ``slurm`` (its config
    selects the template, as the original's), else on ``gpu_short``; the others on
    ``cpu_short``."""
    if node.task is not None:
        t = node.task
        payload = resolve(t.payload, run.input, results)
        return StepTask(t.task_class, payload, t.priority, t.timeout_s, t.retries)
    config = node.config()
    context = {"workflow_id": run.workflow_id, "run_id": run.id, "node_id": node.id}
    if node.type == "training" and slurm:
        return StepTask("gpu_slurm", {**config, "workflow_context": context})
    payload = {"type": node.type, "config": config, "input": dict(run.input), **context}
    cls = "cpu_short"
    if node.type == "signature":
        domain = str(config.get("execution_domain", "")).lower()
        if domain in GPU_DOMAINS:
            cls = "gpu_slurm" if slurm else "gpu_short"
        elif domain == "cpu_long":
            cls = "cpu_long"
    elif node.type == "training":
        cls = "gpu_short"
    if cls == "gpu_slurm":
        payload = {**config, "workflow_context": context}
    return StepTask(cls, payload)


def runs_code(wf: Workflow, *, slurm: bool) -> str | None:
    """The path of the first step that runs code (a ``shell``/``python`` task, a Slurm job),
    or None: such a workflow needs a trusted author."""
    for i, node in enumerate(wf.nodes):
        if node.task is not None:
            ptype = node.task.payload.get("type")
            if isinstance(ptype, str) and ptype.strip().lower() in TRUSTED_TYPES:
                return f"nodes[{i}].task.payload.type"
            if node.task.task_class == "gpu_slurm":
                return f"nodes[{i}].task.class"
        elif slurm and (node.type == "training" or node.type == "signature"):
            probe = Run("", "", "", "", {}, {}, {}, 0.0)
            if step_task(node, probe, {}, slurm=True).task_class == "gpu_slurm":
                return f"nodes[{i}].type"
    return None


# ------------------------------------------------------------------------------ the run


@dataclass
class Step:
    node_id: str
    name: str
    type: str
    status: str = "pending"
    attempts: int = 0
    task_id: str | None = None
    task_class: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    retry_at: float | None = None  # unix time the next attempt may start (a backoff)
    result: Any = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node_id": self.node_id,
            "name": self.name,
            "type": self.type,
            "action": self.task_class or "",
            "status": self.status,
            "attempts": self.attempts,
        }
        extra = {
            "task_id": self.task_id,
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "result": self.result,
            "error": self.error,
        }
        out.update({k: v for k, v in extra.items() if v is not None})
        return out


@dataclass
class Decision:
    """What the engine must do after a change: submit these steps' tasks (node ids), cancel
    these tasks, emit these events ``(event type, data)``; ``retry_at``: the earliest backoff
    to wake up for."""

    submit: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retry_at: float | None = None


@dataclass
class Run:
    id: str
    workflow_id: str
    workflow_name: str
    workflow_version: str
    input: dict[str, Any]
    steps: dict[str, Step]
    parents: dict[str, list[str]]
    created_at: float
    status: str = "pending"
    updated_at: float = 0.0
    completed_at: float | None = None
    idempotency_key: str = ""
    error: str | None = None
    retries: dict[str, int] = field(default_factory=dict)  # node id -> retries allowed
    spec: dict[str, Any] = field(default_factory=dict)  # the workflow as it was at the start

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "workflow_name": self.workflow_name,
            "workflow_version": self.workflow_version,
            "input": self.input,
            "steps": [vars(s) for s in self.steps.values()],
            "parents": self.parents,
            "created_at": self.created_at,
            "status": self.status,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "idempotency_key": self.idempotency_key,
            "error": self.error,
            "retries": self.retries,
            "spec": self.spec,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Run:
        steps = {s["node_id"]: Step(**s) for s in d["steps"]}
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "steps"}
        return cls(steps=steps, **fields)

    def record(self) -> dict[str, Any]:
        """The run as the API shows it (the original's RunRecord, plus ``error``)."""
        out: dict[str, Any] = {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "workflow_name": self.workflow_name,
            "workflow_version": self.workflow_version,
            "status": self.status,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "steps": [s.record() for s in self.steps.values()],
            "input": self.input,
            "metadata": {"node_count": len(self.steps)},
            "idempotency_key": self.idempotency_key,
        }
        if self.completed_at is not None:
            out["completed_at"] = iso(self.completed_at)
        if self.error:
            out["error"] = self.error
        return out

    def progress(self) -> dict[str, Any]:
        """The gRPC stream's view: ``{status, current_step, steps_completed, total_steps,
        output, error}`` (``output``: the results of the steps nothing depends on)."""
        running = [s.node_id for s in self.steps.values() if s.status == "running"]
        done = sum(1 for s in self.steps.values() if s.status == "succeeded")
        leaves = set(self.steps) - {p for ps in self.parents.values() for p in ps}
        output = {
            n: self.steps[n].result for n in sorted(leaves) if self.steps[n].status == "succeeded"
        }
        return {
            "run_id": self.id,
            "status": WIRE_STATUS.get(self.status, self.status),
            "current_step": ",".join(running),
            "steps_completed": done,
            "total_steps": len(self.steps),
            "output": output,
            "error": self.error or "",
        }

    @property
    def finished(self) -> bool:
        return self.status in RUN_TERMINAL

    def next_task_id(self, node_id: str) -> str:
        """The id of the step's next attempt's task."""
        return task_id_of(self.id, node_id, self.steps[node_id].attempts + 1)

    def results(self) -> dict[str, Any]:
        return {n: s.result for n, s in self.steps.items() if s.status == "succeeded"}

    # -- decisions ------------------------------------------------------------------------
    def advance(self, now: float) -> Decision:
        """Start what can start; skip what never will; end the run when nothing is left."""
        out = Decision()
        if self.finished:
            return out
        if self.status == "pending":
            self.status = "running"
            out.events.append(("workflow_started", self._event()))
        failed = {n for n, s in self.steps.items() if s.status in ("failed", "skipped")}
        changed = True
        while changed:  # skip every step downstream of a failure
            changed = False
            for n, s in self.steps.items():
                if s.status == "pending" and failed & set(self.parents[n]):
                    s.status, s.error = "skipped", "an upstream step failed"
                    s.completed_at = now
                    failed.add(n)
                    changed = True
        for n in self.steps:  # insertion order: the workflow's topological order
            s = self.steps[n]
            if s.status != "pending":
                continue
            if not all(self.steps[p].status == "succeeded" for p in self.parents[n]):
                continue
            if s.retry_at is not None and s.retry_at > now:
                out.retry_at = min(out.retry_at or s.retry_at, s.retry_at)
                continue
            out.submit.append(n)
        if not out.submit and out.retry_at is None:
            self._maybe_finish(now, out)
        self.updated_at = now
        return out

    def started(self, node_id: str, task_id: str, task_class: str, now: float) -> dict[str, Any]:
        """Record a step's attempt as submitted; the ``step_started`` event's data."""
        s = self.steps[node_id]
        s.attempts += 1
        s.status, s.task_id, s.task_class = "running", task_id, task_class
        s.started_at, s.retry_at, s.error = now, None, None
        self.updated_at = now
        return self._event(node_id=node_id, task_id=task_id, attempt=s.attempts)

    def task_ended(
        self, task_id: str, status: str, result: Any, error: str, now: float
    ) -> Decision:
        """A step's task ended (``completed``, ``failed`` or ``cancelled``)."""
        out = Decision()
        s = next((x for x in self.steps.values() if x.task_id == task_id), None)
        if s is None or s.status != "running":
            return out  # stale: an earlier attempt, or the run moved on
        if status == "completed":
            s.status, s.result, s.completed_at = "succeeded", result, now
            out.events.append(("step_completed", self._event(node_id=s.node_id, task_id=task_id)))
        elif self.status == "cancelled":
            s.status, s.error, s.completed_at = "cancelled", error or "cancelled", now
        elif status != "cancelled" and s.attempts <= self.retries.get(s.node_id, 0):
            backoff = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_S * 2.0 ** (s.attempts - 1))
            s.status, s.error, s.retry_at = "pending", error, now + backoff
            data = self._event(
                node_id=s.node_id, task_id=task_id, step_error=error, retry_in_s=backoff
            )
            out.events.append(("step_failed", data))
        else:
            s.status, s.error, s.completed_at, s.result = "failed", error, now, result
            data = self._event(node_id=s.node_id, task_id=task_id, step_error=error, final=True)
            out.events.append(("step_failed", data))
        nxt = self.advance(now)
        out.submit, out.retry_at = nxt.submit, nxt.retry_at
        out.events += nxt.events
        return out

    def unsubmitted(self, task_id: str, retry_at: float) -> None:
        """A step's attempt was recorded but its task never admitted: it goes again (same id)."""
        s = next((x for x in self.steps.values() if x.task_id == task_id), None)
        if s is not None and s.status == "running":
            s.status, s.attempts, s.retry_at = "pending", max(0, s.attempts - 1), retry_at

    def step_failed(self, node_id: str, error: str, now: float) -> Decision:
        """A step that cannot even be submitted fails (no retry: its input is wrong)."""
        s = self.steps[node_id]
        s.status, s.error, s.completed_at = "failed", error, now
        data = self._event(node_id=node_id, step_error=error, final=True)
        out = Decision(events=[("step_failed", data)])
        nxt = self.advance(now)
        out.submit, out.retry_at, out.events = nxt.submit, nxt.retry_at, out.events + nxt.events
        return out

    def cancel(self, now: float) -> Decision:
        """Cancel the run: running tasks are cancelled, the rest never starts."""
        out = Decision()
        if self.finished:
            return out
        self.status, self.error = "cancelled", "cancelled"
        for s in self.steps.values():
            if s.status == "running" and s.task_id:
                out.cancel.append(s.task_id)  # its end, when it comes, is stale
            if s.status in ("running", "pending"):
                s.status, s.completed_at, s.error = "cancelled", now, "the run was cancelled"
        self.completed_at = self.updated_at = now
        out.events.append(("workflow_cancelled", self._event()))
        return out

    def _maybe_finish(self, now: float, out: Decision) -> None:
        if any(s.status == "running" for s in self.steps.values()):
            return
        failed = [s for s in self.steps.values() if s.status == "failed"]
        if failed:
            self.status = "failed"
            self.error = f"step {failed[0].node_id} failed: {failed[0].error}"
            out.events.append(("workflow_failed", self._event()))
        elif all(s.status == "succeeded" for s in self.steps.values()):
            self.status = "succeeded"
            out.events.append(("workflow_completed", self._event()))
        else:
            return
        self.completed_at = now

    def _event(self, **extra: Any) -> dict[str, Any]:
        return {**self.progress(), "workflow_id": self.workflow_id, **extra}


def new_run(wf: Workflow, run_input: Mapping[str, Any], idempotency_key: str, now: float) -> Run:
    """A pending run of ``wf`` (id ``run-<16 hex>`` as the original's)."""
    order = wf.order()
    parents = wf.parents()
    steps = {n: Step(n, wf.node(n).name, wf.node(n).type) for n in order}
    retries = {n.id: n.task.retries for n in wf.nodes if n.task is not None and n.task.retries}
    return Run(
        id=f"run-{uuid.uuid4().hex[:16]}",
        workflow_id=wf.id,
        workflow_name=wf.name,
        workflow_version=wf.version or wf.updated_at,
        input=dict(run_input),
        steps=steps,
        parents=parents,
        created_at=now,
        updated_at=now,
        idempotency_key=idempotency_key,
        retries=retries,
        spec=wf.to_json(),
    )

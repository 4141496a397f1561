"""Workflow specifications: the original's JSON accepted as is, plus a generic ``task`` node.

A workflow is ``{id, name, description?, tags?, tenant?, version?, created_at?, updated_at?,
nodes[], edges[]}``. Node types ``signature``, ``verifier``, ``reward``, ``training``,
``deployment`` and ``custom`` carry the original's configs (seed-system §4.6); a ``task`` node is
exactly ``{id, name, type: "task", task: {class, payload, priority?, timeout_s?, retries?}}``,
whose payload may hold ``${input.x}`` and ``${steps.<id>.result.y}`` references. Edges
(``data``, ``control``, ``reward``) order the nodes: a node runs once every source of an edge
into it succeeded.

Unlike the original, a one-node workflow (no edges) is fine; a cycle (a self-loop included) is
rejected naming it; a reference to an unknown node, or to one that does not run before the
referring node, is rejected naming both. Every error is a :class:`SpecError` with the path of
the offending field (``nodes[2].task.class``). Pure: no I/O.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayinfra import json_input
from rayinfra.errors import InvalidArgumentError

__all__ = [
    "EDGE_KINDS",
    "NODE_TYPES",
    "REFERENCE",
    "Edge",
    "Node",
    "SpecError",
    "TaskNodeConfig",
    "Workflow",
    "parse_workflow",
]

NODE_TYPES = ("signature", "verifier", "reward", "training", "deployment", "custom", "task")
EDGE_KINDS = ("data", "control", "reward")
REFERENCE = re.compile(r"\$\{(input|steps)\.([A-Za-z0-9_.-]+)\}")
"""``${input.<key path>}`` and ``${steps.<node id>.<path>}`` in a task node's payload."""
VALID_ID = _ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class SpecError(InvalidArgumentError):
    """An invalid workflow spec; ``field`` is the path of the offending value."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Position(_Model):
    x: float = 0.0
    y: float = 0.0


class SignatureConfig(_Model):
    prompt: str = Field(min_length=1)
    tools: list[str] = Field(default_factory=list)
    runtime: str = ""
    max_tokens: int = Field(default=0, ge=0)
    temperature: float = 0.0
    execution_domain: str = ""


class VerifierConfig(_Model):
    command: str = Field(min_length=1)
    weight: float = Field(default=1.0, ge=0)
    penalty: float = 0.0
    timeout_sec: float = Field(default=0.0, ge=0)
    success_signal: str = ""


class RewardConfig(_Model):
    metric: str = Field(min_length=1)
    target: float = 0.0
    aggregator: str = ""
    window: int = Field(default=0, ge=0)
    scale: float = 1.0


class TrainingConfig(_Model):
    method: str = Field(min_length=1)
    skill: str = Field(min_length=1)
    dataset: str = ""
    schedule: str = ""
    max_steps: int = Field(default=0, ge=0)
    slurm_profile: str = ""
    trigger_metric: str = ""


class DeploymentConfig(_Model):
    tenant: str = Field(min_length=1)
    domain: str = Field(min_length=1)
    channel: str = Field(min_length=1)
    strategy: str = ""
    autopromote: bool = False


class TaskNodeConfig(BaseModel):
    """A ``task`` node's task: exactly these keys (a typo is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task_class: str = Field(alias="class", min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0, le=100)


_CONFIG_OF = {
    "signature": SignatureConfig,
    "verifier": VerifierConfig,
    "reward": RewardConfig,
    "training": TrainingConfig,
    "deployment": DeploymentConfig,
}


class Node(_Model):
    id: str
    name: str = Field(min_length=1)
    type: Literal["signature", "verifier", "reward", "training", "deployment", "custom", "task"]
    description: str = ""
    position: Position | None = None
    signature: SignatureConfig | None = None
    verifier: VerifierConfig | None = None
    reward: RewardConfig | None = None
    training: TrainingConfig | None = None
    deployment: DeploymentConfig | None = None
    custom: dict[str, Any] | None = None
    task: TaskNodeConfig | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.fullmatch(v):
            raise ValueError("must be 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _config_present(self) -> Node:
        if self.type == "custom":
            if not self.custom:
                raise ValueError("a custom node needs a non-empty 'custom' object")
        elif getattr(self, self.type) is None:
            raise ValueError(f"a {self.type} node needs its '{self.type}' object")
        return self

    def config(self) -> dict[str, Any]:
        """The node's own config (the object named by its type), as JSON."""
        if self.type == "custom":
            return dict(self.custom or {})
        value = getattr(self, self.type)
        return dict(value.model_dump(mode="json", by_alias=True))


class Edge(_Model):
    id: str = ""
    source: str
    target: str
    kind: Literal["data", "control", "reward"] = "control"
    label: str = ""


class Workflow(_Model):
    """A validated workflow: nodes, edges, and the order they run in."""

    id: str = ""
    name: str = Field(min_length=1)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    tenant: str = ""
    version: str = ""
    created_at: str = ""
    updated_at: str = ""
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(default_factory=list)

    @field_validator("tags")
    @classmethod
    def _sorted(cls, v: list[str]) -> list[str]:
        return sorted(v)

    @field_validator("id")
    @classmethod
    def _workflow_id(cls, v: str) -> str:
        if v and not _ID.fullmatch(v):  # it names a file: never a path
            raise ValueError("must be 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")
        return v

    # -- structure ------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def parents(self) -> dict[str, list[str]]:
        """node id -> the ids it waits for (sorted, distinct)."""
        out: dict[str, set[str]] = {n.id: set() for n in self.nodes}
        for e in self.edges:
            out[e.target].add(e.source)
        return {k: sorted(v) for k, v in out.items()}

    def order(self) -> list[str]:
        """Node ids in a topological order, ties broken by id (Kahn)."""
        parents = self.parents()
        children: dict[str, list[str]] = {n: [] for n in parents}
        for node, ps in parents.items():
            for p in ps:
                children[p].append(node)
        waiting = {n: len(ps) for n, ps in parents.items()}
        ready = [n for n, k in waiting.items() if k == 0]
        heapq.heapify(ready)
        out: list[str] = []
        while ready:
            n = heapq.heappop(ready)
            out.append(n)
            for c in children[n]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, c)
        return out

    def ancestors(self, node_id: str) -> set[str]:
        parents = self.parents()
        seen: set[str] = set()
        todo = list(parents[node_id])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(parents[p])
        return seen

    def trimmed(self) -> dict[str, Any]:
        """The listing form (``GET /workflows``): no nodes and edges, their counts instead."""
        data = self.to_json()
        data.pop("nodes")
        data.pop("edges")
        return {**data, "node_count": len(self.nodes), "edge_count": len(self.edges)}

    def to_json(self) -> dict[str, Any]:
        return dict(self.model_dump(mode="json", by_alias=True, exclude_none=True))


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def _find_cycle(wf: Workflow) -> list[str]:
    """One cycle as ``[a, b, ..., a]`` (empty if none)."""
    parents = wf.parents()
    children: dict[str, list[str]] = {n: [] for n in parents}
    for node, ps in parents.items():
        for p in ps:
            children[p].append(node)
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        color[n] = 1
        stack.append(n)
        for c in sorted(children[n]):
            if color.get(c) == 1:
                return [*stack[stack.index(c) :], c]
            if c not in color:
                found = visit(c)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return []

    for n in sorted(parents):
        if n not in color:
            found = visit(n)
            if found:
                return found
    return []


def references(value: Any) -> Iterable[tuple[str, str]]:
    """Every ``(scope, path)`` referenced in a JSON value (``scope``: input or steps)."""
    if isinstance(value, str):
        for m in REFERENCE.finditer(value):
            yield m.group(1), m.group(2)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def _check(wf: Workflow, classes: Iterable[str] | None) -> None:
    ids: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, n in enumerate(wf.nodes):
        if n.id in ids:
            raise SpecError(f"nodes[{i}].id", f"{n.id!r} is also nodes[{ids[n.id]}].id")
        if n.name in names:
            raise SpecError(f"nodes[{i}].name", f"{n.name!r} is also nodes[{names[n.name]}].name")
        ids[n.id], names[n.name] = i, i
    edge_ids: dict[str, int] = {}
    for i, e in enumerate(wf.edges):
        if e.id:
            if e.id in edge_ids:
                raise SpecError(f"edges[{i}].id", f"{e.id!r} is also edges[{edge_ids[e.id]}].id")
            edge_ids[e.id] = i
        for end in ("source", "target"):
            if getattr(e, end) not in ids:
                raise SpecError(f"edges[{i}].{end}", f"no node has id {getattr(e, end)!r}")
    cycle = _find_cycle(wf)
    if cycle:
        raise SpecError("edges", f"the edges form a cycle: {' -> '.join(cycle)}")
    known = set(classes) if classes is not None else None
    for i, n in enumerate(wf.nodes):
        if n.task is None:
            continue
        if known is not None and n.task.task_class not in known:
            raise SpecError(
                f"nodes[{i}].task.class",
                f"unknown class {n.task.task_class!r}; known: {', '.join(sorted(known))}",
            )
        upstream = wf.ancestors(n.id)
        for scope, path in references(n.task.payload):
            if scope != "steps":
                continue
            step = path.split(".", 1)[0]
            if step not in ids:
                raise SpecError(
                    f"nodes[{i}].task.payload", f"${{steps.{path}}} names no node ({step!r})"
                )
            if step not in upstream:
                raise SpecError(
                    f"nodes[{i}].task.payload",
                    f"${{steps.{path}}}: {step!r} does not run before {n.id!r} (add an edge)",
                )


def parse_workflow(data: Any, *, classes: Iterable[str] | None = None) -> Workflow:
    """Validate a workflow (a dict, or JSON text/bytes); :class:`SpecError` names the path.
    ``classes``: the task classes a ``task`` node may name (None: not checked)."""
    if isinstance(data, bytes | str):
        try:
            data = json_input.loads(data)
        except ValueError as e:
            raise SpecError("spec", f"is not valid JSON: {e}") from None
    if not isinstance(data, Mapping):
        raise SpecError("spec", "must be a JSON object")
    try:
        wf = Workflow.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise SpecError(_path(first["loc"]), first["msg"].removeprefix("Value error, ")) from None
    _check(wf, classes)
    return wf

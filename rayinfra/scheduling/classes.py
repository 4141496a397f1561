"""Task classes -> Ray options, and whether any node can ever run a class (pure logic).

Ray leaves a task whose resources or labels no node has PENDING forever. The scheduler asks
:func:`unsatisfiable_reason` against the alive nodes and fails such tasks, naming what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayinfra.config import ClassConfig

EXECUTOR_MAX_CONCURRENCY = 1000


@dataclass(frozen=True)
class NodeView:
    """What the scheduler needs to know about a node."""

    node_id: str
    resources_total: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    alive: bool = True


def resource_request(cls: ClassConfig) -> dict[str, float]:
    """The Ray resources one executor of the class reserves (zero amounts dropped)."""
    req = {"CPU": cls.num_cpus, "GPU": cls.num_gpus, **cls.resources}
    return {k: float(v) for k, v in req.items() if v}


def executor_name(task_class: str, n: int) -> str:
    return f"executor-{task_class}-{n}"


def executor_options(task_class: str, cls: ClassConfig, n: int, namespace: str) -> dict[str, Any]:
    """Ray actor options of executor ``n`` of a class: the class's resources, labels and env."""
    opts: dict[str, Any] = {
        "name": executor_name(task_class, n),
        "namespace": namespace,
        "num_cpus": cls.num_cpus,
        "num_gpus": cls.num_gpus,
        "max_restarts": 0,  # the scheduler replaces executors; Ray-level retries stay off
        "max_task_retries": 0,
        "max_concurrency": EXECUTOR_MAX_CONCURRENCY,
    }
    if cls.resources:
        opts["resources"] = dict(cls.resources)
    if selector := cls.node_selector:
        opts["label_selector"] = selector
    if cls.runtime_env:
        opts["runtime_env"] = dict(cls.runtime_env)
    return opts


_IN = re.compile(r"^(!)?in\((.*)\)$")


def label_matches(selector_value: str, actual: str | None) -> bool:
    """Ray label selector semantics: ``v``, ``!v``, ``in(a,b)``, ``!in(a,b)``."""
    m = _IN.match(selector_value)
    if m:
        choices = {c.strip() for c in m.group(2).split(",") if c.strip()}
        inside = actual is not None and actual in choices
        return not inside if m.group(1) else inside
    if selector_value.startswith("!"):
        return actual != selector_value[1:]
    return actual == selector_value


def node_satisfies(
    node: NodeView, request: Mapping[str, float], label_selector: Mapping[str, str]
) -> bool:
    if not node.alive:
        return False
    for name, amount in request.items():
        if node.resources_total.get(name, 0.0) + 1e-9 < amount:
            return False
    return all(label_matches(v, node.labels.get(k)) for k, v in label_selector.items())


def unsatisfiable_reason(
    task_class: str,
    request: Mapping[str, float],
    label_selector: Mapping[str, str],
    nodes: Sequence[NodeView],
) -> str | None:
    """``None`` if some alive node could run the class (when idle), else what is missing."""
    alive = [n for n in nodes if n.alive]
    if any(node_satisfies(n, request, label_selector) for n in alive):
        return None
    problems: list[str] = []
    for name, amount in sorted(request.items()):
        best = max((n.resources_total.get(name, 0.0) for n in alive), default=0.0)
        if best + 1e-9 < amount:
            problems.append(f"resource {name}={amount:g} (largest node has {best:g})")
    for key, want in sorted(label_selector.items()):
        seen = sorted({n.labels[key] for n in alive if key in n.labels})
        if not any(label_matches(want, n.labels.get(key)) for n in alive):
            problems.append(f"label {key}={want} (nodes have: {', '.join(seen) or 'none'})")
    if not problems:  # each requirement alone is met somewhere, never all on one node
        wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(request.items()))
        if label_selector:
            wanted += " with labels " + ", ".join(f"{k}={v}" for k, v in label_selector.items())
        problems.append(f"resources {wanted} together on one node")
    nodes_alive = f"{len(alive)} alive node{'s' if len(alive) != 1 else ''}"
    return (
        f"no node can run task class {task_class!r}: it needs {'; '.join(problems)} ({nodes_alive})"
    )


def can_fit(request: Mapping[str, float], available: Mapping[str, float]) -> bool:
    """Whether Ray's free resources hold one more executor's ``request``."""
    return all(available.get(k, 0.0) + 1e-9 >= v for k, v in request.items())


def executor_target(
    slots: int | None,
    min_executors: int,
    max_limit: int,
    current: int,
    backlog: int,
    inflight: int,
    free_fits: bool,
) -> int:
    """How many executors a class should have (pure).

    Unbounded slots: ``min_executors`` (at least 1). With slots: one more than now when there
    is work beyond the current capacity, Ray has room for another executor, and the class is
    below ``ceil(max_limit / slots)`` executors; never fewer than ``min_executors``.
    """
    floor = max(1, min_executors)
    if slots is None:
        return floor
    ceiling = max(floor, -(-max_limit // slots))
    capacity = current * slots
    if backlog > 0 and inflight + backlog > capacity and free_fits and current < ceiling:
        return current + 1
    return max(floor, current)


def merge_runtime_env(class_env: Mapping[str, Any], task_env: Mapping[str, Any]) -> dict[str, Any]:
    """A task's runtime_env over its class's: ``env_vars`` merge key by key, other keys replace."""
    merged = {**class_env, **task_env}
    if "env_vars" in class_env or "env_vars" in task_env:
        merged["env_vars"] = {**class_env.get("env_vars", {}), **task_env.get("env_vars", {})}
    return merged

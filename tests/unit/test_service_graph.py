"""Dependency closure, cycles and the start plan, step by step."""

from __future__ import annotations

from typing import Any

import pytest

from rayinfra.services.graph import StartPlan, closure, dependants, stop_order
from rayinfra.services.spec import ServiceSpec, SpecError, parse_spec


def svc(name: str, deps: Any = (), health: bool = True) -> ServiceSpec:
    table: dict[str, Any] = {"argv": ["true"], "driver": "process", "depends_on": list(deps)}
    if health:
        table["health"] = {"kind": "tcp", "port": 1}
    return parse_spec(name, table)


def catalog(*specs: ServiceSpec) -> dict[str, ServiceSpec]:
    return {s.name: s for s in specs}


DSPY_SHAPE = catalog(
    svc("redis"),
    svc("redb"),
    svc("zookeeper"),
    svc("kafka", ["zookeeper"]),
    svc("node-a", [{"service": "redis", "condition": "healthy"}]),
    svc("node-b", [{"service": "redis", "condition": "healthy"}]),
    svc("router", ["node-a", "node-b"]),
)


def test_closure_pulls_in_dependencies_in_start_order() -> None:
    order = closure(DSPY_SHAPE, ["router", "kafka"])
    assert set(order) == {"router", "node-a", "node-b", "redis", "kafka", "zookeeper"}
    for s in order:
        for d in DSPY_SHAPE[s].depends_on:
            assert order.index(d.service) < order.index(s)
    assert closure(DSPY_SHAPE, ["kafka", "router"]) == order  # deterministic


def test_unknown_dependency_names_the_path() -> None:
    specs = catalog(svc("a", ["b"]), svc("b", ["ghost"]))
    with pytest.raises(SpecError) as e:
        closure(specs, ["a"])
    assert e.value.field == "b.depends_on"
    assert "a -> b -> ghost" in str(e.value)


def test_unknown_selected_service() -> None:
    with pytest.raises(SpecError, match="unknown service 'nope'") as e:
        closure(DSPY_SHAPE, ["nope"])
    assert e.value.field == "service_names"


def test_cycle_is_rejected_with_its_path() -> None:
    specs = catalog(svc("a", ["b"]), svc("b", ["c"]), svc("c", ["a"]), svc("d", ["a"]))
    with pytest.raises(SpecError, match=r"dependency cycle: a -> b -> c -> a"):
        closure(specs, ["d"])


def test_self_dependency_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="depends on itself"):
        svc("a", ["a"])


def test_stop_order_and_dependants() -> None:
    order = stop_order(DSPY_SHAPE, ["redis", "node-a", "router"])
    assert order.index("router") < order.index("node-a") < order.index("redis")
    assert dependants(DSPY_SHAPE, "redis") == {"node-a", "node-b", "router"}


def test_a_dependant_starts_as_soon_as_its_own_dependency_is_healthy() -> None:
    plan = StartPlan(DSPY_SHAPE, closure(DSPY_SHAPE, DSPY_SHAPE), parallel=0)
    first = plan.startable()
    assert set(first) == {"redis", "redb", "zookeeper"}
    plan.mark("redis", "started")
    assert plan.startable() == []  # node-a/b wait for redis *healthy*
    plan.mark("redis", "healthy")
    assert plan.startable() == []  # healthy, but its turn (and final update) not over yet
    plan.finish("redis")
    # redb and zookeeper are still starting: no depth waves, the nodes go now
    assert set(plan.startable()) == {"node-a", "node-b"}
    plan.mark("zookeeper", "started")
    plan.mark("zookeeper", "healthy")
    plan.finish("zookeeper")
    assert plan.startable() == ["kafka"]


def test_parallel_limit_counts_active_services() -> None:
    specs = catalog(*(svc(f"s{i}") for i in range(5)))
    plan = StartPlan(specs, sorted(specs), parallel=2)
    assert plan.startable() == ["s0", "s1"]
    assert plan.startable() == []
    plan.mark("s0", "healthy")
    plan.finish("s0")
    assert plan.startable() == ["s2"]


def test_failure_blocks_dependants_transitively_and_others_go_on() -> None:
    plan = StartPlan(DSPY_SHAPE, closure(DSPY_SHAPE, DSPY_SHAPE), parallel=0)
    plan.startable()
    plan.mark("redis", "failed", "image not found")
    plan.finish("redis")
    plan.startable()
    assert plan.phase("node-a") == "blocked"
    assert plan.phase("router") == "blocked"
    assert "redis is failed (image not found)" in plan.reason("node-a")
    assert plan.reason("router").startswith("node-a is blocked")
    assert not plan.finished()  # redb and zookeeper still starting
    for s in ("redb", "zookeeper"):
        plan.mark(s, "healthy")
        plan.finish(s)
    assert plan.startable() == ["kafka"]
    plan.mark("kafka", "healthy")
    plan.finish("kafka")
    assert plan.finished()


def test_unhealthy_dependency_meets_started_but_not_healthy() -> None:
    specs = catalog(
        svc("db"),
        svc("loose", ["db"]),
        svc("strict", [{"service": "db", "condition": "healthy"}]),
    )
    plan = StartPlan(specs, closure(specs, specs), parallel=0)
    assert plan.startable() == ["db"]
    plan.mark("db", "started")
    assert plan.startable() == ["loose"]
    plan.mark("db", "unhealthy", "no PONG within 60s")
    plan.finish("db")
    assert plan.startable() == []
    assert plan.phase("strict") == "blocked"


def test_completed_condition_waits_for_a_clean_exit() -> None:
    specs = catalog(
        svc("migrate", health=False),
        svc("app", [{"service": "migrate", "condition": "completed"}]),
    )
    plan = StartPlan(specs, closure(specs, specs), parallel=0)
    assert plan.awaited("migrate") == {"completed"}
    assert plan.startable() == ["migrate"]
    plan.mark("migrate", "started")
    assert plan.startable() == []
    plan.mark("migrate", "completed")
    plan.finish("migrate")
    assert plan.startable() == ["app"]


def test_no_health_check_counts_as_healthy_once_started() -> None:
    specs = catalog(
        svc("plain", health=False), svc("dep", [{"service": "plain", "condition": "healthy"}])
    )
    plan = StartPlan(specs, closure(specs, specs), parallel=0)
    plan.startable()
    plan.mark("plain", "started")
    plan.finish("plain")
    assert plan.startable() == ["dep"]

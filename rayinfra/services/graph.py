"""Service dependency graph and the start plan (pure: no I/O, no clock of its own).

:func:`closure` turns a selection into the set to start (dependencies pulled in), rejecting an
unknown dependency or a cycle with the path named. :class:`StartPlan` is the state machine a
start operation runs: a service becomes startable the moment its own dependencies meet their
conditions (never in depth waves), at most ``parallel`` start at once, and a service whose
dependency failed is ``blocked``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from rayinfra.services.spec import ServiceSpec, SpecError

#: progress of one service inside a start operation
Phase = Literal[
    "waiting", "starting", "started", "healthy", "unhealthy", "completed", "failed", "blocked"
]


def closure(specs: Mapping[str, ServiceSpec], selected: Iterable[str]) -> list[str]:
    """``selected`` plus every transitive dependency, in a deterministic start order.

    Raises :class:`SpecError` for an unknown service or dependency (naming the path that led
    to it) and for a cycle (naming the cycle).
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if name not in specs:
            if path:
                raise SpecError(
                    f"{path[-1]}.depends_on",
                    f"unknown service {name!r} (path: {' -> '.join([*path, name])})",
                )
            raise SpecError("service_names", f"unknown service {name!r}; known: {sorted(specs)}")
        mark = state.get(name)
        if mark == 2:
            return
        if mark == 1:
            cycle = [*path[path.index(name) :], name]
            raise SpecError(f"{name}.depends_on", f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for dep in sorted(d.service for d in specs[name].depends_on):
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in sorted(set(selected)):
        visit(name, [])
    return order


def check_graph(specs: Mapping[str, ServiceSpec]) -> None:
    """Validate the whole catalog (unknown dependencies, cycles)."""
    closure(specs, specs)


def stop_order(specs: Mapping[str, ServiceSpec], names: Iterable[str]) -> list[str]:
    """``names`` with dependants before their dependencies (reverse start order)."""
    wanted = set(names)
    order = closure(specs, [n for n in wanted if n in specs])
    return [n for n in reversed(order) if n in wanted] + sorted(wanted - set(specs))


def dependants(specs: Mapping[str, ServiceSpec], name: str) -> set[str]:
    """Every service that depends on ``name``, directly or not."""
    out: set[str] = set()
    frontier = [name]
    while frontier:
        cur = frontier.pop()
        for s in specs.values():
            if s.name not in out and any(d.service == cur for d in s.depends_on):
                out.add(s.name)
                frontier.append(s.name)
    return out


@dataclass
class _Entry:
    spec: ServiceSpec
    phase: Phase = "waiting"
    reason: str = ""
    active: bool = False  # handed out by startable() and not yet finished


@dataclass
class StartPlan:
    """Which service may start now, given what already happened.

    :meth:`startable` hands out services whose dependencies meet their conditions while fewer
    than ``parallel`` are active (``parallel`` 0 = unlimited); the caller reports each phase
    with :meth:`mark` and ends a service's turn with :meth:`finish` (a service is active from
    creation until it reached what it is waited for: healthy, running or completed). A
    ``healthy`` or ``completed`` condition is met once the turn ended, so whoever reports
    progress sees the dependency ready before the dependant starts. A
    dependency that failed, or can never meet the condition, blocks its dependants.
    """

    specs: Mapping[str, ServiceSpec]
    names: list[str]
    parallel: int = 5
    entries: dict[str, _Entry] = field(init=False)

    def __post_init__(self) -> None:
        self.entries = {n: _Entry(self.specs[n]) for n in self.names}
        for n in self.names:
            for d in self.specs[n].depends_on:
                if d.service not in self.entries:
                    raise SpecError(f"{n}.depends_on", f"{d.service!r} is not part of this start")

    def phase(self, name: str) -> Phase:
        return self.entries[name].phase

    def reason(self, name: str) -> str:
        return self.entries[name].reason

    def awaited(self, name: str) -> set[str]:
        """Conditions dependants in this plan wait for on ``name``."""
        return {
            d.condition for n in self.names for d in self.specs[n].depends_on if d.service == name
        }

    def _meets(self, dep: str, condition: str) -> bool | None:
        """True: met; False: not yet; None: can never be met."""
        e = self.entries[dep]
        if e.phase in ("failed", "blocked"):
            return None
        if condition == "completed":
            if e.phase == "completed":
                return not e.active  # its turn ended: its final update is out
            never = e.phase == "unhealthy" or (not e.active and e.phase != "waiting")
            return None if never else False
        if condition == "healthy":
            if e.phase == "healthy" or (
                e.phase in ("started", "completed") and e.spec.health is None
            ):
                return not e.active  # its turn ended: its final update is out
            return None if e.phase == "unhealthy" else False
        return e.phase in ("started", "healthy", "unhealthy", "completed")

    def startable(self) -> list[str]:
        """Services to start now (marks them ``starting`` and active)."""
        self._propagate_blocks()
        active = sum(1 for e in self.entries.values() if e.active)
        out: list[str] = []
        for n in self.names:
            e = self.entries[n]
            if e.phase != "waiting":
                continue
            if self.parallel and active + len(out) >= self.parallel:
                break
            if all(self._meets(d.service, d.condition) for d in e.spec.depends_on):
                out.append(n)
        for n in out:
            self.entries[n].phase = "starting"
            self.entries[n].active = True
        return out

    def _propagate_blocks(self) -> None:
        changed = True
        while changed:
            changed = False
            for n in self.names:
                e = self.entries[n]
                if e.phase != "waiting":
                    continue
                for d in e.spec.depends_on:
                    if self._meets(d.service, d.condition) is None:
                        dep = self.entries[d.service]
                        e.phase = "blocked"
                        e.reason = f"{d.service} is {dep.phase}" + (
                            f" ({dep.reason})" if dep.reason and dep.phase != "blocked" else ""
                        )
                        changed = True
                        break

    def mark(self, name: str, phase: Phase, reason: str = "") -> None:
        e = self.entries[name]
        e.phase = phase
        e.reason = reason

    def finish(self, name: str) -> None:
        self.entries[name].active = False

    def finished(self) -> bool:
        """Nothing is active and nothing waiting can ever start."""
        self._propagate_blocks()
        return not any(e.active or e.phase == "waiting" for e in self.entries.values())

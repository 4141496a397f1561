"""Is the runtime healthy, and what is degraded: the one answer of the Health RPC, ``GET /health``
and ``rayinfra status`` (pure: the callers ask the actors, this judges their answers).

Healthy means the runtime accepts and runs tasks: the ``scheduler`` and the ``gateway`` answer,
and every *required* service that is wanted running is running. Anything else that is down is
a degradation, not a failure: an optional service (``required = false``) that is unhealthy or
stopped, the ``service_registry``, ``health_checker``, ``workflows`` or ``event_bus`` actor not
answering. Both stay visible: each component's own status in the map, and a summary under
:data:`SUMMARY_KEY` (the original server answered ``orchestrator: healthy`` there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["ESSENTIAL_ACTORS", "HEALTHY", "SUMMARY_KEY", "HealthReport", "assess"]

#: the control actors without which no task is admitted or run
ESSENTIAL_ACTORS = ("scheduler", "gateway")
#: the key of the summary in the Health map
SUMMARY_KEY = "orchestrator"
HEALTHY = "healthy"
RUNNING = "running"


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """``healthy``; ``failing``: what makes it unhealthy; ``degraded``: what is down without
    stopping tasks; ``services``: component -> status, with the summary under SUMMARY_KEY."""

    healthy: bool
    failing: list[str]
    degraded: list[str]
    services: dict[str, str]

    @property
    def summary(self) -> str:
        """``healthy``, ``degraded: ...`` or ``unhealthy: ...[; degraded: ...]``."""
        if not self.healthy:
            text = "unhealthy: " + ", ".join(self.failing)
            return text + ("; degraded: " + ", ".join(self.degraded) if self.degraded else "")
        return "degraded: " + ", ".join(self.degraded) if self.degraded else HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "summary": self.summary,
            "failing": list(self.failing),
            "degraded": list(self.degraded),
        }


def assess(
    actors: Mapping[str, str],
    services: Mapping[str, Mapping[str, Any]] | None,
    required_services: Collection[str] = (),
    *,
    registry_error: str = "",
) -> HealthReport:
    """Judge the control actors' states (name -> ``healthy`` or why not) and the service
    registry's rows (``None``: it could not be asked; ``registry_error`` says why).

    A service row counts when it is wanted running (``desired``) or named in
    ``required_services``; its ``status`` other than ``running`` fails the runtime when the row
    is ``required``, else degrades it. Unknown service states (registry down) degrade it."""
    out: dict[str, str] = dict(actors)
    failing: list[str] = []
    degraded: list[str] = []
    for name, state in actors.items():
        if state == HEALTHY:
            continue
        (failing if name in ESSENTIAL_ACTORS else degraded).append(f"{name} {_short(state)}")
    for name in ESSENTIAL_ACTORS:
        if name not in actors:
            failing.append(f"{name} unavailable")
    if registry_error:
        out.setdefault("service_registry", f"error: {registry_error}")
        degraded.append(f"service_registry error: {_short(registry_error)}")
    if services is None:
        if not registry_error and actors.get("service_registry", HEALTHY) != HEALTHY:
            degraded.append("services unknown")
    else:
        for name, row in services.items():
            if not row.get("desired") and name not in required_services:
                continue
            status = str(row.get("status", ""))
            out[name] = status
            if status != RUNNING:
                (failing if row.get("required") else degraded).append(f"{name} {status}")
    report = HealthReport(not failing, failing, degraded, out)
    out[SUMMARY_KEY] = report.summary
    return report


def _short(state: str) -> str:
    """``unavailable: ActorDiedError: ...`` -> ``unavailable``: the summary names, the map tells."""
    return state.split(":", 1)[0]

"""Helpers shared by every actor's private prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest


def snapshot(registry: CollectorRegistry) -> dict[str, float]:
    """``name -> value``; labelled series keyed ``name{k="v",...}`` (the original's shape)."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            name = s.name
            if s.labels:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                name = f"{name}{{{labels}}}"
            out[name] = float(s.value)
    return out


class PrivateMetrics:
    """Base of an actor's metrics: a private ``registry`` read as a dict or as Prometheus text."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def snapshot(self) -> dict[str, float]:
        """``name -> value``; labelled series keyed ``name{k="v",...}`` (the original's shape)."""
        return snapshot(self.registry)

    def text(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

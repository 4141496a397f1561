"""Helpers shared by every actor's private prometheus registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def select_metrics(metrics: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """The series of ``metrics`` (a :func:`snapshot`) named in ``names``: a name selects its own
    series and each labelled one (``name{...}``). One set lookup per ``{`` of a key, so a long
    list of names costs no more than a short one."""
    wanted = set(names)

    def selected(key: str) -> bool:
        if key in wanted:
            return True
        at = key.find("{")
        while at >= 0:
            if key[:at] in wanted:
                return True
            at = key.find("{", at + 1)
        return False

    return {k: v for k, v in metrics.items() if selected(k)}


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

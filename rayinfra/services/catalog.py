"""The service catalog: a shipped profile, the user's definitions and the original's overrides.

Pure: reads the package's profile files and the resolved config, nothing else. The result is
validated (every spec, every dependency, no cycles) before anything starts.
"""

from __future__ import annotations

import hashlib
import re
import socket
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayinfra.services.graph import check_graph
from rayinfra.services.spec import ServiceSpec, SpecError, merge_tables, parse_specs

if TYPE_CHECKING:
    from rayinfra.config import ServicesSection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PLACEHOLDER = re.compile(r"\{(profile_dir|state_dir)\}")


def profile_dir() -> Path:
    """Directory of the shipped profiles (and their data files, like prometheus.yml)."""
    return Path(str(resources.files("rayinfra.services") / "profiles"))


def profile_names() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.toml"))


def load_profile(name: str) -> dict[str, Any]:
    """The raw service tables of profile ``name``."""
    path = profile_dir() / f"{name}.toml"
    if not path.is_file():
        raise SpecError("services.profile", f"unknown profile {name!r}; known: {profile_names()}")
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def default_cluster_name(state_dir: Path) -> str:
    """``<host>-<8 hex of the state dir>``: stable per runtime, never the Ray cluster id."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "host"
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:8]
    return f"{host[:40]}-{digest}"


def cluster_name(cfg: ServicesSection, state_dir: Path) -> str:
    return cfg.cluster_name or default_cluster_name(state_dir)


def _substitute(value: Any, subs: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: subs[m.group(1)], value)
    if isinstance(value, list):
        return [_substitute(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, subs) for k, v in value.items()}
    return value


def build_catalog(cfg: ServicesSection, state_dir: Path) -> dict[str, ServiceSpec]:
    """Profile tables + ``definitions`` (deep-merged) + legacy ``overrides``, validated."""
    tables: dict[str, Any] = load_profile(cfg.profile)
    for name, table in cfg.definitions.items():
        base = tables.get(name, {})
        tables[name] = merge_tables(base, table) if isinstance(table, Mapping) else table
    for ov in cfg.overrides:  # the original env-manager's service_overrides entries
        if ov.name not in tables:
            raise SpecError(
                "services.overrides", f"unknown service {ov.name!r}; known: {sorted(tables)}"
            )
        t = dict(tables[ov.name])
        if ov.required is not None:
            t["required"] = ov.required
        if ov.health_check_url:  # an http check of that URL replaces a port-based one
            health = {k: v for k, v in (t.get("health") or {}).items() if k != "port"}
            t["health"] = {**health, "kind": "http", "url": ov.health_check_url}
        if ov.environment:
            env = dict(t.get("env") or {})
            for item in ov.environment:
                k, _, v = item.partition("=")
                env[k] = v
            t["env"] = env
        tables[ov.name] = t
    subs = {"profile_dir": str(profile_dir()), "state_dir": str(state_dir)}
    specs = parse_specs(_substitute(tables, subs), where=f"profile {cfg.profile}")
    check_graph(specs)
    return specs

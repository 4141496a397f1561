"""The package's shape: one Ray caller, a cheap import, two transports with one protocol."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from rayinfra.client.actor_transport import ActorTransport
from rayinfra.client.grpc_transport import GrpcTransport
from rayinfra.client.transport import Transport

PACKAGE = Path(__file__).resolve().parents[2] / "rayinfra"
GENERATED = PACKAGE / "api" / "generated"
RAY_CALL = re.compile(r"\.remote\(|^\s*(import ray\b|from ray\b)|(?<![\w.])ray\.[a-z_]+\(", re.M)


def _sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if GENERATED not in p.parents]


def test_only_raywrap_calls_ray() -> None:
    """``.remote(``, ``import ray`` and ``ray.x(`` appear in raywrap.py and nowhere else."""
    offenders = [
        f"{p.relative_to(PACKAGE.parent)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for p in _sources()
        if p.name != "raywrap.py"
        for text in [p.read_text()]
        for m in RAY_CALL.finditer(text)
    ]
    assert offenders == []
    # and the check itself sees what it is meant to see
    assert RAY_CALL.search((PACKAGE / "raywrap.py").read_text())


def _imported_by(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def test_import_rayinfra_loads_no_heavy_dependency() -> None:
    loaded = _imported_by("import rayinfra")
    assert "rayinfra" in loaded  # the listing is what we think it is
    heavy = {"fastapi", "grpc", "docker", "ray", "uvicorn", "google.protobuf"}
    assert sorted(heavy & loaded) == []


def test_cli_talking_to_a_runtime_loads_no_pydantic_ray_or_docker() -> None:
    """What ``rayinfra status`` / ``task list`` / ``services status`` load (the CLI, its
    settings, the gRPC client, the task model, one coerced option): pydantic alone is ~110 ms
    of their 0.3 s budget, Ray and Docker more."""
    loaded = _imported_by(
        "import rayinfra.cli.main as m, rayinfra.client.agentinfra, rayinfra.client.services\n"
        "from rayinfra.cli.common import dial\n"
        "from rayinfra.client.discovery import grpc_transport\n"
        "grpc_transport(dial(None), '127.0.0.1:1')\n"
        "try:\n    m.app(['task', 'list', '--limit', '1', '--state-dir', '/nonexistent'])\n"
        "except SystemExit:\n    pass\n"
    )
    assert {"grpc", "rayinfra.client.grpc_transport", "typer"} <= loaded
    heavy = {"pydantic", "rayinfra.config", "ray", "docker", "fastapi", "uvicorn"}
    assert sorted(heavy & loaded) == []


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_both_transports_implement_the_protocol() -> None:
    """Adding a primitive means adding it to the protocol and to both transports: each has
    every primitive with the protocol's parameters (the actor one may add defaulted ones: the
    gateway passes ``trusted``/``source`` to the same ``submit``), and the gRPC one nothing
    else."""
    want = _public(Transport)
    for impl in (ActorTransport, GrpcTransport):
        have = _public(impl)
        assert set(want) <= set(have), impl
        for name, sig in want.items():
            params = list(have[name].parameters.values())
            assert [p.name for p in params[: len(sig.parameters)]] == list(sig.parameters), name
            assert all(p.default is not p.empty for p in params[len(sig.parameters) :]), name
            assert str(have[name].return_annotation) == str(sig.return_annotation), name
    assert set(_public(GrpcTransport)) == set(want)
    assert (ActorTransport.kind, GrpcTransport.kind) == ("actors", "grpc")


def test_public_names_stay_what_they_are_once_submodules_load() -> None:
    """A submodule named like a function would replace it as the package's attribute."""
    import rayinfra
    import rayinfra.client
    from rayinfra.client import AgentInfra, ServicesClient  # loads every client submodule

    assert callable(rayinfra.client.connect) and rayinfra.connect is rayinfra.client.connect
    assert inspect.isfunction(rayinfra.connect)
    assert AgentInfra.__module__ == "rayinfra.client.agentinfra"
    assert ServicesClient.__module__ == "rayinfra.client.services"


def test_the_scheduler_actor_only_moves_messages() -> None:
    """Decisions live in ``scheduling/state.py`` (unit-tested without Ray); the actor file that
    carries messages between it, the executors and the store stays under 300 lines."""
    lines = (PACKAGE / "actors" / "scheduler.py").read_text().count("\n")
    assert lines < 300, f"actors/scheduler.py has {lines} lines; move a concern out of it"

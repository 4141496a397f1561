"""Services dropped from the config: the ``service_registry`` actor shell (its class, no Ray)
started under config A, then again under config B that lacks a running service, over the same
state dir, with real drivers (local processes; the Docker engine when one is reachable).

Each incarnation runs in its own event loop, as a restarted actor does in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest

from rayinfra.actors.services import ServiceRegistryActor
from rayinfra.config import config_to_dict, load_config
from rayinfra.connection import pid_alive
from rayinfra.errors import InvalidArgumentError
from rayinfra.services.drivers.process import ProcessDriver
from rayinfra.services.spec import LABEL_CLUSTER
from tests.conftest import free_port
from tests.support import images

pytestmark = pytest.mark.integration

CI_SOCKET = "/run/ci-docker.sock"
T = TypeVar("T")


def docker_url() -> str | None:
    """The engine to use (DOCKER_HOST, else the CI engine's socket), or None if none answers."""
    url = os.environ.get("DOCKER_HOST") or (
        f"unix://{CI_SOCKET}" if Path(CI_SOCKET).exists() else None
    )
    if url is None:
        return None
    try:
        with contextlib.closing(docker.DockerClient(base_url=url, timeout=10)) as c:
            c.ping()
    except docker.errors.DockerException:
        return None
    return url


def redis_table(port: int) -> dict[str, Any]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    return {
        "driver": "process",
        "argv": [*argv, "--appendonly", "no"],
        "ports": [port],
        "health": {"kind": "redis", "port": port, "interval_s": 0.5},
    }


#: the service that config B drops, per driver: a database-like process, or a container
GONE = {
    "process": lambda: redis_table(free_port()),
    "docker": lambda: {
        "image": images.BUSYBOX_IMAGE,
        "command": ["sleep", "600"],
        "network_mode": "none",
    },
}


@dataclass
class Setup:
    root: Path
    cluster: str
    driver: str  # the dropped service's
    docker_url: str | None

    def config(self, services: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The effective config (as actors get it) with these service definitions."""
        toml = [
            "[state]",
            f'dir = "{self.root / "state"}"',
            "[services]",
            'profile = "local"',
            f'cluster_name = "{self.cluster}"',
            "stop_timeout_s = 3",
            "health_timeout_s = 30",
        ]
        if self.docker_url:
            toml.append(f'docker_host = "{self.docker_url}"')
        for name, table in services.items():
            toml.append(f"[services.definitions.{name}]")
            toml += [f"{k} = {json.dumps(v)}" for k, v in table.items() if k != "health"]
            if "health" in table:
                h = ", ".join(f"{k} = {json.dumps(v)}" for k, v in table["health"].items())
                toml.append(f"health = {{ {h} }}")
        path = self.root / f"config-{uuid.uuid4().hex[:6]}.toml"
        path.write_text("\n".join(toml) + "\n")
        env = {"HOME": str(self.root), "RAYINFRA_CONFIG": str(path)}
        return config_to_dict(load_config(env=env, cwd=self.root).config)


def incarnation(config: dict[str, Any], body: Callable[[ServiceRegistryActor], Awaitable[T]]) -> T:
    """Run ``body`` against a fresh registry over ``config``, in an event loop of its own."""

    async def run() -> T:
        reg = ServiceRegistryActor(config)
        try:
            return await body(reg)
        finally:
            await reg.manager.close()
            await reg.shutdown()

    return asyncio.run(run())


async def start(reg: ServiceRegistryActor, names: list[str]) -> dict[str, str]:
    """Start ``names``; their final statuses."""
    op = await reg.start(names)
    seq, done, final = 0, False, {}
    while not done:
        seq, updates, done = await reg.op_updates(op, seq, 10.0)
        final.update({u["service_name"]: u["status"] for u in updates if u["progress"] == 100})
    return final


def pid_of(container_id: str) -> int:
    return int(container_id.split("-")[0])  # a process instance: "<pid>-<start ticks>"


@pytest.fixture(params=["process", "docker"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    url = docker_url()
    if request.param == "docker":
        if url is None:
            pytest.skip("no Docker engine reachable (DOCKER_HOST or /run/ci-docker.sock)")
        with contextlib.closing(docker.DockerClient(base_url=url, timeout=120)) as c:
            images.build(c, "busybox")
    s = Setup(tmp_path, f"orph-{uuid.uuid4().hex[:10]}", request.param, url)
    yield s
    processes = ProcessDriver(tmp_path / "state" / "services")
    for inst in processes.list_owned({LABEL_CLUSTER: s.cluster}):
        processes.remove(inst.id)
    if url is not None:
        with contextlib.closing(docker.DockerClient(base_url=url, timeout=60)) as c:
            flt = {"label": f"{LABEL_CLUSTER}={s.cluster}"}
            for box in c.api.containers(all=True, filters=flt):
                c.api.remove_container(box["Id"], force=True)


def test_a_service_dropped_from_the_config_is_orphaned_until_pruned(setup: Setup) -> None:
    keep = {"driver": "process", "argv": ["sleep", "600"]}
    config_a = setup.config({"keep": keep, "gone": GONE[setup.driver]()})
    config_b = setup.config({"keep": keep})

    async def under_a(reg: ServiceRegistryActor) -> str:
        assert await start(reg, ["keep", "gone"]) == {"keep": "healthy", "gone": "healthy"}
        return str((await reg.status(["gone"]))["gone"]["container_id"])

    instance = incarnation(config_a, under_a)
    client = docker.DockerClient(base_url=setup.docker_url) if setup.driver == "docker" else None
    with contextlib.closing(client) if client is not None else contextlib.nullcontext():
        orphaned_then_pruned(setup, config_b, instance, client)


def orphaned_then_pruned(
    setup: Setup, config_b: dict[str, Any], instance: str, client: Any
) -> None:
    """Registry B: the dropped service is listed ``orphaned``, left alone, then pruned."""

    def running() -> bool:
        if client is None:
            return pid_alive(pid_of(instance))
        try:
            return bool(client.api.inspect_container(instance)["State"]["Running"])
        except docker.errors.NotFound:
            return False

    async def under_b(reg: ServiceRegistryActor) -> None:
        assert await reg.recovered() == {"keep": "adopted", "gone": "orphaned"}
        row = (await reg.status([]))["gone"]
        assert row["status"] == "orphaned" and row["container_id"] == instance, row
        assert "services prune" in row["message"] and row["driver"] == setup.driver
        _, events = await reg.events(0, types=["service_orphaned"])
        assert [(e["resource_id"], e["data"]["instance_id"]) for e in events] == [
            ("gone", instance)
        ]
        # the health checker is never asked to watch (or restart) it
        assert set(await reg.watch_list()) == {"keep"}
        ok, why = await reg.restart_unhealthy("gone", "exited")
        assert not ok and "not wanted running" in why
        with pytest.raises(InvalidArgumentError, match="orphaned"):
            await reg.restart("gone")
        # stopping "everything" stops what the config has and leaves the orphan alone
        assert await reg.stop([]) == {"keep": "stopped"}
        assert running()
        assert await reg.prune() == {"gone": "stopped"}
        assert not running()
        assert "gone" not in await reg.status([])
        assert await reg.prune() == {}

    incarnation(config_b, under_b)

    async def again_under_b(reg: ServiceRegistryActor) -> None:
        assert await reg.recovered() == {}  # pruned for good: not adopted, not orphaned again
        assert set(await reg.status([])) == {"keep", "prometheus", "redis"}

    incarnation(config_b, again_under_b)
    if client is not None:
        with pytest.raises(docker.errors.NotFound):
            client.api.inspect_container(instance)

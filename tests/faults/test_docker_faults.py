"""The Docker engine fails under a runtime's managed services, for real (the CI engine on
unix:///run/ci-docker.sock, TESTING.md), each on a runtime of its own:

- dockerd is stopped (SIGTERM to the pid in its pid file, which stops its containers) and
  started again with the argv it had, while tasks are being submitted. The service registry and
  the health checker keep running (no actor restart) and say the engine is unavailable; once it
  answers again the monitor brings the service back (running and healthy, a new container) and
  GetServicesStatus shows it; every acknowledged task completes; Health answers healthy.
- a managed service's container is killed and removed and its image deleted. The one whose
  image is in the loopback registry (127.0.0.1:5000) is pulled again and runs; the one whose
  image exists nowhere but in the deleted tag is reported failed, naming the image and why it
  cannot be pulled. No actor restarts; every acknowledged task completes; Health answers.

The dockerd test stops the engine every other test of the machine uses: it keeps the outage
short and always leaves dockerd answering (a finally that starts it again if it does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from rayinfra import AgentInfraSync
from rayinfra.client.services import ServicesClient
from rayinfra.config import RayinfraConfig
from rayinfra.connection import pid_alive
from tests.conftest import free_port
from tests.support import images
from tests.support.faults import (
    TaskStream,
    assert_health,
    assert_none_lost,
    connected,
    events_of,
    grpc_client,
    runtime_of_its_own,
)
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DOCKER_SOCKET = "unix:///run/ci-docker.sock"
DOCKERD_PIDFILE = Path("/var/lib/ci-docker/dockerd.pid")
DOCKERD_LOG = Path("/var/lib/ci-docker/dockerd.log")
#: .ci/setup.d/20-dockerd.sh's command line: used only if the running one could not be read
DOCKERD_ARGV = [
    "dockerd", "--data-root", "/var/lib/ci-docker/data", "--exec-root", "/var/lib/ci-docker/exec",
    "-H", DOCKER_SOCKET, "--pidfile", str(DOCKERD_PIDFILE), "--bridge=none", "--iptables=false",
    "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
]  # fmt: skip
REGISTRY = os.environ.get("RAYINFRA_TEST_REGISTRY", "127.0.0.1:5000")
RESTART = "{ backoff_initial_s = 0.5, backoff_max_s = 2.0, max_attempts = 10, window_s = 120 }"


# ------------------------------------------------------------------------------ the engine


def docker_answers() -> bool:
    """``docker version`` answers on the CI socket."""
    done = subprocess.run(
        ["docker", "-H", DOCKER_SOCKET, "version"], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


def dockerd_pid() -> int | None:
    """The pid in dockerd's pid file, if it names a live dockerd."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(DOCKERD_PIDFILE.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd" and pid_alive(pid):
            return pid
    return None


def start_dockerd(argv: list[str]) -> None:
    """Start dockerd with ``argv`` as .ci/setup.d/20-dockerd.sh does (in the background, its
    output appended to its log; a shell that exits at once hands it to init), then wait for
    ``docker version``."""
    subprocess.run(
        ["sh", "-c", 'log="$1"; shift; nohup "$@" >>"$log" 2>&1 </dev/null &', "sh",
         str(DOCKERD_LOG), *argv],
        check=True, timeout=30, start_new_session=True,
    )  # fmt: skip
    wait_until("dockerd to answer `docker version`", docker_answers, timeout=60, step=0.2)


@dataclass
class Engine:
    """The CI engine, stopped and started by its pid file, with the argv it was started with."""

    argv: list[str]

    def stop(self) -> None:
        pid = dockerd_pid()
        assert pid is not None, f"no live dockerd named in {DOCKERD_PIDFILE}"
        os.kill(pid, signal.SIGTERM)
        # in CI dockerd is a child of pytest (.ci/run sources the setup, then execs the tests):
        # it exits into a zombie that only its parent can reap
        wait_until("dockerd to exit", lambda: not pid_alive(pid), 60, 0.1)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def start(self) -> None:
        start_dockerd(self.argv)


@pytest.fixture
def engine() -> Iterator[Engine]:
    """The running engine's argv (from /proc/<pid>/cmdline); afterwards dockerd answers again,
    whatever the test did."""
    pid = dockerd_pid()
    assert pid is not None and docker_answers(), "dockerd is not running: .ci/setup.d/20-dockerd.sh"
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    try:
        yield Engine(argv)
    finally:
        if not docker_answers():
            if dockerd_pid() is None:
                start_dockerd(argv or DOCKERD_ARGV)
            else:  # stopping or starting: let it get there
                wait_until("dockerd to answer", docker_answers, timeout=60, step=0.2)


@pytest.fixture(scope="module")
def engine_client() -> Iterator[Any]:
    client = docker.DockerClient(base_url=DOCKER_SOCKET, timeout=120)
    images.build_all(client, ["busybox"])
    yield client
    client.close()


# ------------------------------------------------------------------------------ the runtime


@dataclass
class Rt:
    config: RayinfraConfig
    ports: dict[str, int]

    def services(self) -> ServicesClient:
        return ServicesClient.from_config(self.config)

    def start(self, *names: str) -> dict[str, dict[str, Any]]:
        """Start ``names``; each one's final update."""
        with self.services() as svc:
            return {u["service_name"]: u for u in svc.start(list(names)) if u["progress"] == 100}

    def rows(self, infra: AgentInfraSync, *names: str) -> dict[str, dict[str, Any]]:
        """The full service rows (status, message, container id)."""
        rows: dict[str, dict[str, Any]] = infra.runtime_status(list(names))["services"]
        return rows

    def actors(self, infra: AgentInfraSync) -> dict[str, tuple[int, int]]:
        """The services actors' (pid, restarts)."""
        actors = infra.runtime_status()["actors"]
        return {
            n: (actors[n]["pid"], actors[n]["restarts"])
            for n in ("service_registry", "health_checker")
        }


def http_service(name: str, port: int, image: str = images.BUSYBOX_IMAGE) -> str:
    """A busybox httpd on 127.0.0.1:port in the host network, probed over HTTP."""
    command = ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/etc"]
    return f"""
[services.definitions.{name}]
image = "{image}"
command = {json.dumps(command)}
network_mode = "host"
health = {{ kind = "http", url = "http://127.0.0.1:{port}/passwd", interval_s = 0.3, timeout_s = 1 }}
restart = {RESTART}
"""


@contextlib.contextmanager
def services_runtime(prefix: str, services: str, ports: dict[str, int]) -> Iterator[Rt]:
    toml = f"""
[services]
profile = "none"
health_timeout_s = 30
stop_timeout_s = 2
start_attempts = 2
docker_host = "{DOCKER_SOCKET}"
{services}"""
    with runtime_of_its_own(prefix, toml) as config:
        yield Rt(config, ports)


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def explained(rt: Rt, *names: str) -> Iterator[None]:
    """An assertion failing inside the block carries the services' events."""
    try:
        yield
    except AssertionError as e:
        events = [(n, events_of(rt.config, n)) for n in names]
        raise AssertionError(f"{e}\nevents: {events}") from None


def status_of(rt: Rt, name: str) -> dict[str, Any]:
    """GetServicesStatus's row of ``name`` (the env manager's gRPC)."""
    with rt.services() as svc:
        return svc.status([name])[name]


# ------------------------------------------------------------------------------ the tests


def test_dockerd_restarted_under_a_running_service(engine: Engine, engine_client: Any) -> None:
    """``web`` runs through the restart; ``late`` is started while the engine is down (it
    fails, saying so) and starts by itself once the engine answers (it is wanted running)."""
    ports = {"web": free_port(), "late": free_port()}
    toml = http_service("web", ports["web"]) + http_service("late", ports["late"])
    with (
        services_runtime("dockerd", toml, ports) as rt,
        connected(rt.config) as infra,
        explained(rt, *ports),
    ):
        final = rt.start("web")
        assert final["web"]["status"] == "healthy", final
        assert answers(ports["web"])
        before = status_of(rt, "web")
        assert before["status"] == "running", before
        actors = rt.actors(infra)
        stream = TaskStream(lambda: grpc_client(rt.config), f"dk-{uuid.uuid4().hex[:6]}", {"type": "sleep",
                            "seconds": 0.3})  # fmt: skip
        stream.start()
        try:
            stream.wait_for(10)
            t0 = time.monotonic()
            engine.stop()
            in_outage = len(stream.acknowledged)
            # the registry says why, and keeps answering (GetServicesStatus too)
            wait_until(
                "the registry to report the engine unavailable",
                lambda: "docker unavailable" in rt.rows(infra, "web")["web"]["message"],
                timeout=30,
            )
            assert status_of(rt, "web")["container_id"] == before["container_id"]
            late = rt.start("late")["late"]
            assert late["status"] == "failed" and "docker unavailable" in late["message"], late
            stream.wait_for(in_outage + 10)  # tasks go on being acknowledged meanwhile
            engine.start()
            outage = time.monotonic() - t0
            # the monitor brings web back in a new container (the old one stopped with
            # dockerd); the registry starts late, wanted running, now that it can
            for name in ports:
                wait_until(
                    f"{name} to run, answering",
                    lambda n=name: status_of(rt, n)["status"] == "running" and answers(ports[n]),
                    timeout=60,
                    step=0.2,
                )
        finally:
            ids = stream.stop()
        after = status_of(rt, "web")
        assert after["container_id"] and after["container_id"] != before["container_id"]
        for name in ports:
            wait_until(  # the health checker probes the new containers
                f"the health checker to find {name} healthy",
                lambda n=name: rt.rows(infra, n)[n].get("health", {}).get("status") == "healthy",
                timeout=30,
            )
            cid = status_of(rt, name)["container_id"]
            assert engine_client.containers.get(cid).status == "running"
        assert rt.actors(infra) == actors  # neither services actor crashed
        assert_none_lost(infra, ids)
        assert_health(infra)
        print(f"engine down {outage:.1f}s; {len(ids)} tasks acknowledged, all completed")


def push_unique_image(client: Any, tag: str) -> str:
    """A busybox image with a layer of its own (so deleting it deletes its content), built,
    pushed to the loopback registry as ``<registry>/rayinfra-test/<tag>`` and kept locally."""
    ref = f"{REGISTRY}/rayinfra-test/fault:{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "mark").write_text(tag)
        (Path(tmp) / "Dockerfile").write_text(f"FROM {images.BUSYBOX_IMAGE}\nCOPY mark /mark\n")
        client.images.build(path=tmp, tag=ref, network_mode="none", rm=True, pull=False)
    for event in client.api.push(ref, stream=True, decode=True):
        assert "error" not in event, event
    return ref


def test_a_killed_container_whose_image_is_deleted(engine_client: Any) -> None:
    tag = uuid.uuid4().hex[:10]
    pulled = push_unique_image(engine_client, tag)
    local = f"rayinfra-test/fault-local:{tag}"  # in no registry
    engine_client.images.get(images.BUSYBOX_IMAGE).tag("rayinfra-test/fault-local", tag)
    ports = {"pulled": free_port(), "local": free_port()}
    toml = http_service("pulled", ports["pulled"], pulled)
    toml += http_service("local", ports["local"], local)
    try:
        with (
            services_runtime("imgdel", toml, ports) as rt,
            connected(rt.config) as infra,
            explained(rt, *ports),
        ):
            final = rt.start("pulled", "local")
            assert {u["status"] for u in final.values()} == {"healthy"}, final
            actors = rt.actors(infra)
            before = {n: status_of(rt, n)["container_id"] for n in ports}
            stream = TaskStream(lambda: grpc_client(rt.config), f"im-{tag}", {"type": "noop"})
            stream.start()
            try:
                stream.wait_for(10)
                for name, image in (("pulled", pulled), ("local", local)):
                    engine_client.api.remove_container(before[name], force=True)  # killed
                    engine_client.api.remove_image(image)  # and its image deleted
                with pytest.raises(docker.errors.ImageNotFound):
                    engine_client.images.get(pulled)
                # the one in the registry is pulled again and runs in a new container
                wait_until(
                    "pulled to run again",
                    lambda: (
                        status_of(rt, "pulled")["status"] == "running" and answers(ports["pulled"])
                    ),
                    timeout=60,
                    step=0.2,
                )
                # the other is failed, saying which image and why it cannot be had
                row = wait_until(
                    "local to be reported failed",
                    lambda: (
                        (r := rt.rows(infra, "local")["local"])["status"] == "failed"
                        and "cannot pull" in r["message"]
                        and r
                    ),
                    timeout=60,
                    step=0.2,
                )
            finally:
                ids = stream.stop()
            assert status_of(rt, "pulled")["container_id"] != before["pulled"]
            assert engine_client.images.get(pulled).id  # pulled again
            assert f"cannot pull {local}" in row["message"], row
            assert "registry docker.io" in row["message"], row
            assert "(gave up after 2 attempts)" in row["message"], row  # start_attempts
            assert status_of(rt, "local")["status"] == "failed"
            assert not answers(ports["local"])
            assert rt.actors(infra) == actors  # no actor crashed
            assert_none_lost(infra, ids)
            assert_health(infra)  # "local" is optional: degraded, not unhealthy
            print(f"local: {row['message']}")
    finally:
        for ref in (pulled, local):
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                engine_client.images.remove(ref, force=True)

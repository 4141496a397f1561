"""DockerDriver against the real engine at DOCKER_HOST (CI: .ci/setup.d/20-dockerd.sh) and the
loopback registry (30-registry.sh). No Ray. Containers run with network_mode "host" or "none"
(the test daemon has no bridge) and bind 127.0.0.1 only; every test labels what it starts with
its own cluster id and removes it, by id, afterwards.

The first block checks the pure helpers (create arguments, names, timestamps, pull progress,
log framing, error messages) without an engine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from rayinfra.services.drivers.base import DriverError, DriverUnavailableError, cpu_percent
from rayinfra.services.drivers.docker import (
    DockerDriver,
    api_error,
    create_kwargs,
    pull_error,
    registry_of,
)
from rayinfra.services.drivers.docker_format import (
    PullTracker,
    _log_frames,
    _log_lines,
    container_name,
    parse_docker_time,
    plan_network,
)
from rayinfra.services.drivers.procnet import namespace_traffic
from rayinfra.services.spec import (
    LABEL_CLUSTER,
    LABEL_SERVICE,
    LABEL_SPEC,
    ServiceSpec,
    SpecError,
    parse_spec,
)
from tests.conftest import free_port
from tests.support import images
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

CI_SOCKET = "/run/ci-docker.sock"
BUSYBOX = images.BUSYBOX_IMAGE
TEST_LABEL = "rayinfra.test"


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def spec_of(name: str = "svc", **table: Any) -> ServiceSpec:
    table.setdefault("image", BUSYBOX)
    return parse_spec(name, table)


def test_container_and_network_names_are_sanitized() -> None:
    assert container_name("c1", "redis") == "rayinfra-c1-redis"
    assert container_name(None, "redis") == "rayinfra-redis"
    assert container_name("my cluster/x", "redb") == "rayinfra-my-cluster-x-redb"
    mode, nets = plan_network(spec_of(), "c 1")
    assert (mode, nets) == (None, ["rayinfra-c-1"])
    assert plan_network(spec_of(), "c1", default_network="host") == ("host", [])
    assert plan_network(spec_of(networks=["a", "b"]), "c1") == (None, ["a", "b"])
    assert plan_network(spec_of(network_mode="none"), "c1") == ("none", [])
    for bad in ({"network_mode": "bridge"}, {"networks": ["default"]}):
        with pytest.raises(SpecError, match="default bridge"):  # the spec already refuses
            spec_of(**bad)
        # and the driver refuses too, should an unvalidated spec ever reach it
        raw = spec_of().model_copy(update=bad)
        with pytest.raises(DriverError, match="default bridge") as ei:
            plan_network(raw, "c1")
        assert ei.value.reason == "invalid_spec"


def test_create_kwargs_carry_the_whole_spec() -> None:
    spec = spec_of(
        "redb",
        command=["serve", "--x"],
        entrypoint=["/bin/sh", "-c"],
        ports=["8082:8080", "0.0.0.0:9000:9000/udp", "8083:8080"],
        env={"A": "1"},
        volumes=["redb_data:/data", "/etc/hosts:/h:ro"],
        resources={"cpus": 1.5, "memory_bytes": "256m", "gpus": 2},
        health={
            "kind": "container",
            "command": ["redis-cli", "ping"],
            "interval_s": 0.5,
            "timeout_s": 2,
            "retries": 4,
            "start_period_s": 1.25,
        },
        labels={"team": "x", LABEL_SERVICE: "spoofed"},
    )
    labels = {**spec.labels, LABEL_SERVICE: "redb", LABEL_CLUSTER: "c1"}
    kw = create_kwargs(spec, labels, "rayinfra-c1-redb", None, ["rayinfra-c1"])
    assert kw["image"] == BUSYBOX and kw["name"] == "rayinfra-c1-redb"
    assert kw["labels"][LABEL_SERVICE] == "redb" and kw["labels"]["team"] == "x"
    assert kw["command"] == ["serve", "--x"] and kw["entrypoint"] == ["/bin/sh", "-c"]
    assert kw["init"] is True and "restart_policy" not in kw
    assert kw["ports"] == {
        "8080/tcp": [("127.0.0.1", 8082), ("127.0.0.1", 8083)],
        "9000/udp": ("0.0.0.0", 9000),
    }
    assert kw["environment"] == {"A": "1"}
    assert kw["volumes"] == ["redb_data:/data:rw", "/etc/hosts:/h:ro"]
    assert kw["nano_cpus"] == 1_500_000_000 and kw["mem_limit"] == 256 * 2**20
    (gpu,) = kw["device_requests"]
    assert gpu["Count"] == 2 and gpu["Capabilities"] == [["gpu"]]
    assert kw["healthcheck"] == {
        "test": ["CMD", "redis-cli", "ping"],
        "interval": 500_000_000,
        "timeout": 2_000_000_000,
        "retries": 4,
        "start_period": 1_250_000_000,
    }
    assert kw["network"] == "rayinfra-c1" and "network_mode" not in kw

    all_gpus = create_kwargs(spec_of(resources={"gpus": -1}, ports=[1]), {}, "n", "host", [])
    assert all_gpus["device_requests"][0]["Count"] == -1
    assert all_gpus["network_mode"] == "host" and "network" not in all_gpus
    assert "ports" not in all_gpus  # host networking publishes nothing
    ids = create_kwargs(spec_of(resources={"gpu_device_ids": ["0", "GPU-abc"]}), {}, "n", None, [])
    assert ids["device_requests"][0]["DeviceIDs"] == ["0", "GPU-abc"]
    plain = create_kwargs(spec_of(health={"kind": "tcp", "port": 1}), {}, "n", "none", [])
    for key in ("device_requests", "healthcheck", "nano_cpus", "mem_limit", "ports", "command"):
        assert key not in plain


def test_docker_timestamps_keep_nanoseconds() -> None:
    assert parse_docker_time("2024-05-01T10:00:00.123456789Z") == pytest.approx(
        1714557600.123456789, abs=1e-6
    )
    assert parse_docker_time("2024-05-01T12:00:00+02:00") == 1714557600.0
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("yesterday") is None


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


class _Body:
    """A response body handing out at most 5 bytes per read (frames arrive in pieces)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int) -> bytes:
        out, self.data = self.data[: min(n, 5)], self.data[min(n, 5) :]
        return out


def test_log_frames_demultiplex_and_join_partial_messages() -> None:
    body = _Body(
        frame(1, b"2024-05-01T10:00:00.5Z hello\n")
        + frame(2, b"2024-05-01T10:00:01Z oops\r\n")
        + frame(1, b"2024-05-01T10:00:02Z part one ")  # a 16 KiB partial message
        + frame(1, b"2024-05-01T10:00:03Z part two\n")
        + frame(2, b"2024-05-01T10:00:04Z a\x00b\n")
    )
    lines = list(_log_lines(_log_frames(body, tty=False)))
    assert [(ln.stream, ln.message) for ln in lines] == [
        ("stdout", "hello"),
        ("stderr", "oops"),
        ("stdout", "part one part two"),
        ("stderr", "a\x00b"),
    ]
    assert lines[0].timestamp == 1714557600.5
    assert lines[2].timestamp == 1714557602.0  # a joined message keeps its first timestamp


def test_pull_tracker_sums_layers_and_skips_existing_ones() -> None:
    t = PullTracker("r/x:1")
    events = [
        {"status": "Pulling from r/x", "id": "1"},
        {"status": "Already exists", "id": "base"},
        {"status": "Pulling fs layer", "id": "a"},
        {"status": "Pulling fs layer", "id": "b"},
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 10, "total": 100}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 5, "total": 50}},
        {"status": "Download complete", "id": "a"},
        {"status": "Extracting", "id": "a", "progressDetail": {"current": 40, "total": 100}},
        {"status": "Download complete", "id": "b"},
        {"status": "Pull complete", "id": "a"},
        {"status": "Pull complete", "id": "b"},
        {"status": "Digest: sha256:0"},
    ]
    out = [p for e in events if (p := t.feed(e)) is not None]
    assert [(p.status, p.current, p.total) for p in out] == [
        ("downloading", 10, 100),
        ("downloading", 15, 150),
        ("downloading", 105, 150),
        ("extracting", 40, 150),
        ("extracting", 100, 150),
        ("extracting", 150, 150),
    ]
    done = t.complete()
    assert (done.status, done.current, done.total) == ("complete", 150, 150)


def test_error_messages_say_what_to_do() -> None:
    busy = docker.errors.APIError(
        "500",
        explanation="driver failed programming external connectivity: Bind for "
        "127.0.0.1:6379 failed: port is already allocated",
    )
    err = api_error("cannot start redis", busy)
    assert err.reason == "port_in_use" and "127.0.0.1:6379" in str(err) and "hint:" in str(err)
    taken = docker.errors.APIError(
        "409", explanation='Conflict. The container name "/x" is already in use by container "ab"'
    )
    assert api_error("cannot start x", taken).reason == "name_conflict"
    unknown = pull_error("127.0.0.1:5000/a/b:1", "manifest unknown: manifest unknown")
    assert unknown.reason == "image_not_found" and "127.0.0.1:5000" in str(unknown)
    assert registry_of("redis:7-alpine") == "docker.io"
    assert registry_of("127.0.0.1:5000/a/b@sha256:00") == "127.0.0.1:5000"
    assert registry_of("ghcr.io/a/b") == "ghcr.io"


# ------------------------------------------------------------------------------------------
# Real engine
# ------------------------------------------------------------------------------------------


def _base_url() -> str | None:
    if os.environ.get("DOCKER_HOST"):
        return None  # the SDK reads it
    return f"unix://{CI_SOCKET}" if Path(CI_SOCKET).exists() else None


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    url = _base_url()
    c = docker.DockerClient(base_url=url, timeout=120) if url else docker.from_env(timeout=120)
    t0 = time.monotonic()
    images.build_all(c)
    print(f"stand-in images ready in {time.monotonic() - t0:.2f}s: {images.TIMINGS}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def driver(client: Any) -> Iterator[DockerDriver]:
    d = DockerDriver(_base_url(), timeout_s=60)
    yield d
    d.close()


@dataclass
class Owner:
    """Labels for one test; everything carrying them is removed after the test."""

    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def cluster(self) -> str:
        return f"t{self.uid}"

    def labels(self, service: str, cluster: str | None = None) -> dict[str, str]:
        return {
            LABEL_SERVICE: service,
            LABEL_CLUSTER: cluster or self.cluster,
            TEST_LABEL: self.uid,
        }


@pytest.fixture
def owner(client: Any) -> Iterator[Owner]:
    o = Owner()
    yield o
    for c in client.api.containers(all=True, filters={"label": f"{TEST_LABEL}={o.uid}"}):
        client.api.remove_container(c["Id"], force=True, v=False)
    for cluster in (o.cluster, f"{o.cluster}-other"):
        for v in (
            client.api.volumes(filters={"label": f"{LABEL_CLUSTER}={cluster}"})["Volumes"] or []
        ):
            client.api.remove_volume(v["Name"])


def sleeper(name: str = "svc", seconds: int = 60, **table: Any) -> ServiceSpec:
    table.setdefault("network_mode", "none")
    table.setdefault("command", ["sleep", str(seconds)])
    return spec_of(name, **table)


def test_check_passes_against_the_engine_and_fails_with_a_hint_on_a_bogus_socket(
    driver: DockerDriver,
) -> None:
    driver.check()
    bogus = DockerDriver(f"unix:///tmp/rayinfra-no-docker-{uuid.uuid4().hex[:8]}.sock")
    with pytest.raises(DriverUnavailableError) as ei:
        bogus.check()
    msg = str(ei.value)
    assert msg.startswith("docker unavailable: ") and "rayinfra-no-docker" in msg
    assert msg.endswith("hint: start dockerd or set DOCKER_HOST / services.docker_host")
    assert ei.value.reason == "unavailable"
    with pytest.raises(DriverUnavailableError):
        bogus.inspect("abc")


def test_start_adopts_the_same_spec_and_recreates_a_changed_one(
    driver: DockerDriver, client: Any, owner: Owner
) -> None:
    spec = sleeper(labels={"team": "infra"})
    labels = owner.labels("svc")
    a = driver.start(spec, labels)
    assert a.state == "running" and a.service == "svc" and a.driver == "docker"
    assert a.labels[LABEL_SPEC] == spec.fingerprint() and a.labels["team"] == "infra"
    assert a.labels[LABEL_CLUSTER] == owner.cluster
    data = client.api.inspect_container(a.id)
    assert data["Name"] == f"/rayinfra-{owner.cluster}-svc"
    assert data["HostConfig"]["Init"] is True
    assert data["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")

    assert driver.start(spec, labels).id == a.id  # same spec: adopted
    driver.stop(a.id, 5)
    assert driver.inspect(a.id).state == "exited"
    again = driver.start(spec, labels)  # stopped: started again, same container
    assert again.id == a.id and again.state == "running"

    changed = sleeper(env={"X": "2"}, labels={"team": "infra"})
    b = driver.start(changed, labels)
    assert b.id != a.id and b.state == "running"
    assert driver.inspect(a.id).state == "missing"
    assert b.labels[LABEL_SPEC] == changed.fingerprint()
    assert [i.id for i in driver.list_owned({TEST_LABEL: owner.uid})] == [b.id]


def test_container_settings_reach_docker(
    driver: DockerDriver, client: Any, owner: Owner, tmp_path: Path
) -> None:
    (tmp_path / "ro.txt").write_text("read only\n")
    vol = f"rayinfra-test-{owner.uid}"
    port = free_port()
    spec = sleeper(
        network_mode="host",
        ports=[f"{port}:{port}"],
        env={"GREETING": "hi there"},
        volumes=[f"{vol}:/data", f"{tmp_path}:/mnt/ro:ro"],
        resources={"cpus": 0.5, "memory_bytes": "64m"},
        entrypoint=["/bin/sh", "-c"],
        command=["exec sleep 60"],
    )
    inst = driver.start(spec, owner.labels("settings"))
    assert inst.state == "running" and inst.pid
    assert inst.ports == ()  # host networking: nothing is published
    host = client.api.inspect_container(inst.id)["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 2**20
    assert host["NetworkMode"] == "host" and host["Init"] is True
    assert client.api.inspect_volume(vol)["Labels"] == {LABEL_CLUSTER: owner.cluster}

    assert driver.exec(inst.id, ["sh", "-c", 'echo "$GREETING"'], 10) == (0, "hi there\n")
    assert driver.exec(inst.id, ["cat", "/mnt/ro/ro.txt"], 10) == (0, "read only\n")
    code, out = driver.exec(inst.id, ["touch", "/mnt/ro/new"], 10)
    assert code != 0 and "Read-only file system" in out
    assert driver.exec(inst.id, ["sh", "-c", "echo x > /data/f && cat /data/f"], 10) == (0, "x\n")


def test_stop_with_init_is_fast_and_remove_is_idempotent(
    driver: DockerDriver, owner: Owner
) -> None:
    # a shell as the command ignores SIGTERM as PID 1; init=True makes stop immediate
    inst = driver.start(sleeper(command=["sh", "-c", "sleep 60; echo done"]), owner.labels("stop"))
    t0 = time.monotonic()
    driver.stop(inst.id, 10)
    took = time.monotonic() - t0
    assert took < 3.0, f"stop took {took:.1f}s: SIGTERM did not reach the process"
    after = driver.inspect(inst.id)
    assert after.state == "exited" and after.exit_code is not None and after.pid is None
    driver.stop(inst.id, 1)  # already stopped
    driver.remove(inst.id)
    assert driver.inspect(inst.id).state == "missing"
    driver.remove(inst.id)  # already gone: not an error
    driver.stop("0" * 64, 1)


def test_inspect_reports_created_running_exited_and_missing(
    driver: DockerDriver, client: Any, owner: Owner
) -> None:
    created = client.api.create_container(
        BUSYBOX,
        ["true"],
        labels=owner.labels("created"),
        host_config=client.api.create_host_config(network_mode="none"),
    )
    c = driver.inspect(created["Id"])
    assert (c.state, c.started_at, c.exit_code, c.service) == ("created", None, None, "created")

    before = time.time()
    failing = driver.start(
        sleeper("fails", command=["sh", "-c", "echo bye; exit 3"]), owner.labels("fails")
    )
    done = wait_until(
        "the failing container to exit",
        lambda: (i := driver.inspect(failing.id)).state == "exited" and i,
    )
    assert done.exit_code == 3 and done.service == "fails"
    assert done.started_at is not None and before - 2 < done.started_at < time.time() + 1

    running = driver.start(sleeper("runs"), owner.labels("runs"))
    assert running.state == "running" and running.exit_code is None and running.pid
    driver.remove(running.id)
    assert driver.inspect(running.id).state == "missing"


def test_wait_exit_returns_when_the_container_ends_or_the_time_runs_out(
    driver: DockerDriver, owner: Owner
) -> None:
    job = driver.start(sleeper("job", command=["sh", "-c", "sleep 2; exit 4"]), owner.labels("job"))
    t0 = time.monotonic()
    still = driver.wait_exit(job.id, 0.2)  # the time runs out first
    assert still.state == "running" and time.monotonic() - t0 >= 0.15, still  # waited, not ended
    done = driver.wait_exit(job.id, 30)  # the engine's wait: as it ends, not at a poll
    assert (done.state, done.exit_code, done.service) == ("exited", 4, "job")
    assert time.monotonic() - t0 < 10
    t1 = time.monotonic()
    assert driver.wait_exit(job.id, 30).exit_code == 4  # an ended container: at once
    assert time.monotonic() - t1 < 5  # not the 30 s asked
    driver.remove(job.id)
    assert driver.wait_exit(job.id, 30).state == "missing"


def test_list_owned_matches_labels_exactly(driver: DockerDriver, owner: Owner) -> None:
    mine = driver.start(sleeper("a"), owner.labels("a"))
    other = driver.start(sleeper("a"), owner.labels("a", cluster=f"{owner.cluster}-other"))
    assert mine.id != other.id
    found = driver.list_owned({LABEL_CLUSTER: owner.cluster})
    assert [i.id for i in found] == [mine.id]
    assert found[0].state == "running" and found[0].labels[TEST_LABEL] == owner.uid
    both = driver.list_owned({TEST_LABEL: owner.uid, LABEL_SERVICE: "a"})
    assert {i.id for i in both} == {mine.id, other.id}
    driver.stop(other.id, 1)
    (stopped,) = driver.list_owned({LABEL_CLUSTER: f"{owner.cluster}-other"})
    assert stopped.state == "exited"  # all=True: stopped containers are listed too
    assert driver.list_owned({LABEL_CLUSTER: owner.cluster[:-1]}) == []  # no prefix match
    with pytest.raises(ValueError):
        driver.list_owned({})  # never "every container on the engine"


def test_start_refuses_a_foreign_container_with_the_same_name(
    driver: DockerDriver, client: Any, owner: Owner
) -> None:
    name = container_name(owner.cluster, "taken")
    foreign = client.api.create_container(
        BUSYBOX,
        ["sleep", "60"],
        name=name,
        labels={TEST_LABEL: owner.uid},  # no rayinfra.service / cluster: not ours
        host_config=client.api.create_host_config(network_mode="none"),
    )
    with pytest.raises(DriverError) as ei:
        driver.start(sleeper("taken"), owner.labels("taken"))
    assert ei.value.reason == "name_conflict" and "hint:" in str(ei.value)
    assert client.api.inspect_container(foreign["Id"])["Name"] == f"/{name}"  # left alone


def test_logs_tail_since_follow_with_timestamps_and_streams(
    driver: DockerDriver, owner: Owner
) -> None:
    # stdout and stderr are copied by separate goroutines: lines a few ms apart may land in
    # either order in the log file, so the last line comes 0.2 s after the one before
    script = "echo one; echo two >&2; sleep 1; echo three; sleep 0.2; echo four >&2; sleep 60"
    t_start = time.time()
    inst = driver.start(sleeper(command=["sh", "-c", script]), owner.labels("logs"))
    wait_until(
        "four log lines",
        lambda: len(list(driver.logs(inst.id, follow=False, tail=None, since=None))) == 4,
    )
    lines = list(driver.logs(inst.id, follow=False, tail=None, since=None))
    by_msg = {ln.message: ln for ln in lines}
    assert {m: ln.stream for m, ln in by_msg.items()} == {
        "one": "stdout",
        "two": "stderr",
        "three": "stdout",
        "four": "stderr",
    }
    for ln in lines:
        assert t_start - 2 < ln.timestamp < time.time() + 1
    assert by_msg["three"].timestamp - by_msg["one"].timestamp > 0.8  # the line's own time

    tail = list(driver.logs(inst.id, follow=False, tail=1, since=None))
    assert [ln.message for ln in tail] == ["four"]
    since = by_msg["two"].timestamp + 0.5
    later = list(driver.logs(inst.id, follow=False, tail=None, since=since))
    assert sorted(ln.message for ln in later) == ["four", "three"]

    # follow on a running container: old lines, then close early without hanging
    gen = driver.logs(inst.id, follow=True, tail=2, since=None)
    assert {next(gen).message, next(gen).message} == {"three", "four"}
    gen.close()


def test_logs_follow_ends_when_the_container_stops(driver: DockerDriver, owner: Owner) -> None:
    script = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    inst = driver.start(sleeper(command=["sh", "-c", script]), owner.labels("follow"))
    t0 = time.monotonic()
    got = [ln.message for ln in driver.logs(inst.id, follow=True, tail=None, since=None)]
    assert got == ["line1", "line2", "line3"]
    assert time.monotonic() - t0 < 10
    assert driver.inspect(inst.id).state == "exited"


def test_exec_returns_code_and_output_and_enforces_the_timeout(
    driver: DockerDriver, owner: Owner
) -> None:
    inst = driver.start(sleeper(), owner.labels("exec"))
    code, out = driver.exec(inst.id, ["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
    assert code == 7 and sorted(out.splitlines()) == ["err", "out"]  # either order: 2 pipes
    t0 = time.monotonic()
    code, out = driver.exec(inst.id, ["sh", "-c", "echo started; sleep 30"], 0.5)
    assert code == 124 and out.startswith("started\n") and "timed out after 0.5s; killed" in out
    assert time.monotonic() - t0 < 3
    # the timed-out process is gone (killed, not left running in the container)
    code, ps = driver.exec(inst.id, ["ps", "-o", "args"], 10)
    assert code == 0 and "sleep 30" not in ps
    code, out = driver.exec(inst.id, ["no-such-binary"], 10)
    assert code in (126, 127) and "no-such-binary" in out
    driver.stop(inst.id, 1)
    with pytest.raises(DriverError):
        driver.exec(inst.id, ["true"], 5)


def test_usage_gives_cpu_percent_between_two_samples(driver: DockerDriver, owner: Owner) -> None:
    spec = sleeper(command=["sh", "-c", "while :; do :; done"], resources={"cpus": 0.5})
    inst = driver.start(spec, owner.labels("busy"))
    a = driver.usage(inst.id)
    time.sleep(1.0)
    b = driver.usage(inst.id)
    pct = cpu_percent(a, b)
    assert b.cpu_time_s > a.cpu_time_s >= 0
    assert 5 < pct < 75, pct  # busy, and capped near 50% by nano_cpus
    # network_mode none: no interfaces in the stats; its namespace (only loopback) from /proc
    assert b.memory_bytes > 0 and (b.rx_bytes, b.tx_bytes, b.network_scope) == (0, 0, "namespace")
    idle = driver.start(sleeper("idle"), owner.labels("idle"))
    x = driver.usage(idle.id)
    time.sleep(0.3)
    assert cpu_percent(x, driver.usage(idle.id)) < 5
    # host networking: the counters are the host's (this process's namespace), and say so
    before = namespace_traffic(os.getpid())
    host = driver.start(sleeper("hostnet", network_mode="host"), owner.labels("hostnet"))
    h = driver.usage(host.id)
    after = namespace_traffic(os.getpid())
    assert before is not None and after is not None and h.network_scope == "host"
    assert before.rx_bytes <= h.rx_bytes <= after.rx_bytes
    assert before.tx_bytes <= h.tx_bytes <= after.tx_bytes


def test_container_healthcheck_drives_dockers_health_status(
    driver: DockerDriver, client: Any, owner: Owner
) -> None:
    spec = sleeper(
        health={
            "kind": "container",
            "command": ["test", "-f", "/tmp/ready"],
            "interval_s": 0.2,
            "timeout_s": 1,
            "retries": 1,
        }
    )
    inst = driver.start(spec, owner.labels("health"))
    hc = client.api.inspect_container(inst.id)["Config"]["Healthcheck"]
    assert hc["Test"] == ["CMD", "test", "-f", "/tmp/ready"] and hc["Interval"] == 200_000_000
    wait_until(
        "the container to turn unhealthy", lambda: driver.inspect(inst.id).health == "unhealthy"
    )
    assert driver.exec(inst.id, ["touch", "/tmp/ready"], 5)[0] == 0
    wait_until("the container to turn healthy", lambda: driver.inspect(inst.id).health == "healthy")
    plain = driver.start(sleeper("plain"), owner.labels("plain"))
    assert plain.health is None


def _registry() -> str:
    return os.environ.get("RAYINFRA_TEST_REGISTRY", "127.0.0.1:5000")


def test_pull_streams_byte_progress_from_the_loopback_registry(
    driver: DockerDriver, client: Any
) -> None:
    ref = f"{_registry()}/rayinfra-test/pull:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp:  # a unique layer, so the pull downloads it
        (Path(tmp) / "blob").write_bytes(os.urandom(2 << 20))
        (Path(tmp) / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
        client.images.build(path=tmp, tag=ref, network_mode="none", rm=True)
    try:
        for event in client.api.push(ref, stream=True, decode=True):
            assert "error" not in event, event
        client.images.remove(ref)
        progress = list(driver.pull(ref))
        assert progress[-1].status == "complete"
        assert progress[-1].current == progress[-1].total > 2 << 20
        downloading = [p for p in progress if p.status == "downloading"]
        assert downloading and downloading[0].total == progress[-1].total
        assert all(p.image == ref for p in progress)
        currents = [p.current for p in downloading]
        assert currents == sorted(currents)
        client.images.get(ref)  # really there
        assert [p.status for p in driver.pull(ref)][-1] == "complete"  # up to date: still ends
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(ref)


def test_pull_names_an_unreachable_registry_and_an_unknown_image(driver: DockerDriver) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DriverError) as ei:
        list(driver.pull(f"127.0.0.1:{port}/rayinfra-test/x:1"))
    assert ei.value.reason == "registry_unreachable"
    assert f"registry 127.0.0.1:{port} is unreachable" in str(ei.value)
    with pytest.raises(DriverError) as ei:
        list(driver.pull(f"{_registry()}/rayinfra-test/never-pushed:{uuid.uuid4().hex[:8]}"))
    assert ei.value.reason == "image_not_found" and _registry() in str(ei.value)


def test_start_pulls_a_missing_image_and_says_why_it_cannot(
    driver: DockerDriver, owner: Owner
) -> None:
    port = free_port()
    with pytest.raises(DriverError) as ei:
        driver.start(sleeper(image=f"127.0.0.1:{port}/nothing:1"), owner.labels("nopull"))
    assert ei.value.reason == "registry_unreachable"
    assert str(ei.value).startswith("cannot start svc: cannot pull 127.0.0.1:")
    assert driver.list_owned({TEST_LABEL: owner.uid}) == []


# ------------------------------------------------------------------------------------------
# The dspy stand-ins answer their health routes (run as the registry would, on loopback)
# ------------------------------------------------------------------------------------------


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return b"PONG" in s.recv(128)
    except OSError:
        return False


def _kafka_up(port: int) -> bool:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
    except (KafkaError, OSError):
        return False
    try:
        return isinstance(admin.list_topics(), list)
    finally:
        admin.close()


def _zookeeper_srvr(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"srvr")
            return b"Mode: standalone" in s.recv(1024)
    except OSError:
        return False


STANDINS = ["redis", "reddb", "ollama", "infermesh", "prometheus", "kafka", "zookeeper"]


@pytest.mark.parametrize("kind", STANDINS)
def test_dspy_stand_in_images_answer_their_health_checks(
    driver: DockerDriver, owner: Owner, kind: str
) -> None:
    p = free_port()
    table: dict[str, Any] = {"network_mode": "host"}
    check: Any
    if kind == "redis":
        table |= {
            "image": "redis:7-alpine",
            "command": ["--port", str(p), "--bind", "127.0.0.1", "--save", ""],
        }
        check = lambda: _redis_pong(p)  # noqa: E731
    elif kind == "reddb":
        table |= {
            "image": "dspy-lightweight:latest",
            "env": {"REDB_HOST": "127.0.0.1", "REDB_PORT": str(p), "REDB_NAMESPACE": "dspy"},
        }
        check = lambda: _http_ok(f"http://127.0.0.1:{p}/health")  # noqa: E731
    elif kind == "ollama":
        table |= {"image": "ollama/ollama:latest", "env": {"OLLAMA_HOST": f"127.0.0.1:{p}"}}
        check = lambda: _http_ok(f"http://127.0.0.1:{p}/api/tags")  # noqa: E731
    elif kind == "infermesh":
        table |= {
            "image": "official-infermesh:latest",
            "env": {"MESH_HOST": "127.0.0.1", "MESH_PORT": str(p), "MESH_ROLE": "router"},
        }
        check = lambda: _http_ok(f"http://127.0.0.1:{p}/health")  # noqa: E731
    elif kind == "prometheus":
        table |= {
            "image": "prom/prometheus:latest",
            "command": [
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                f"--web.listen-address=127.0.0.1:{p}",
            ],
        }
        check = lambda: _http_ok(f"http://127.0.0.1:{p}/-/healthy")  # noqa: E731
    elif kind == "zookeeper":
        table |= {
            "image": "confluentinc/cp-zookeeper:7.5.0",
            "env": {
                "ZOOKEEPER_CLIENT_PORT": str(p),
                "ZOOKEEPER_CLIENT_PORT_ADDRESS": "127.0.0.1",
                "ZOOKEEPER_TICK_TIME": "2000",
            },
        }
        check = lambda: _zookeeper_srvr(p)  # noqa: E731
    else:
        table |= {
            "image": "confluentinc/cp-kafka:7.5.0",
            "env": {
                "KAFKA_LISTENERS": f"PLAINTEXT://127.0.0.1:{p}",
                "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{p}",
            },
        }
        check = lambda: _kafka_up(p)  # noqa: E731
    inst = driver.start(parse_spec(kind, table), owner.labels(kind))
    try:
        wait_until(f"{kind} to answer", check, timeout=15, step=0.1)
    except AssertionError:
        logs = "\n".join(
            ln.message for ln in driver.logs(inst.id, follow=False, tail=30, since=None)
        )
        raise AssertionError(
            f"{kind} stand-in never answered; state {driver.inspect(inst.id)}\n{logs}"
        ) from None
    driver.stop(inst.id, 5)
    assert driver.inspect(inst.id).state == "exited"

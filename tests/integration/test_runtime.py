"""The runtime against a real loopback Ray head: control actors, feeds across restarts, connect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import ray
from ray.util.state import list_actors

from rayinfra import runtime
from rayinfra.actors import control_actor_classes
from rayinfra.config import CONTROL_ACTOR_NAMES, NAMESPACE
from rayinfra.models import FROM_NOW
from rayinfra.taskstore import decode_change
from tests.conftest import RuntimeSpec
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration

CONTROL_NAMES = {
    "scheduler",
    "service_registry",
    "health_checker",
    "workflows",
    "event_bus",
    "gateway",
}


def test_control_actors_follow_the_contract(rt: Runtime) -> None:
    assert set(CONTROL_ACTOR_NAMES) == CONTROL_NAMES == set(control_actor_classes())
    actors = list_actors(
        address=rt.info.dashboard_url,
        filters=[("ray_namespace", "=", NAMESPACE)],
        detail=True,
        raise_on_missing_output=False,
    )
    alive = {a.name: a for a in actors if a.state == "ALIVE"}
    assert set(alive) >= CONTROL_NAMES
    head_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"])
    for name in CONTROL_NAMES:
        a = alive[name]
        assert a.is_detached, name
        assert a.node_id == head_node, name
        # num_cpus=0 and a sliver of the head-node resource, nothing else
        assert a.required_resources == {"node:__internal_head__": 0.001}, name
        pong = ray.get(ray.get_actor(name, namespace=NAMESPACE).ping.remote(), timeout=10)
        assert pong["name"] == name and pong["pid"] == a.pid
    # no other actor name contains "sched" (executors are executor-<class>-<n>)
    assert [a.name for a in actors if "sched" in (a.name or "")] == ["scheduler"]


def test_second_start_is_a_no_op(rt: Runtime) -> None:
    before = {
        n: ray.get(ray.get_actor(n, namespace=NAMESPACE).ping.remote()) for n in CONTROL_NAMES
    }
    report = runtime.start(rt.config)
    assert report.already_running and not report.launched_head
    assert report.info.head_pid == rt.info.head_pid
    assert report.actors == dict.fromkeys(CONTROL_ACTOR_NAMES, "running")
    after = {n: ray.get(ray.get_actor(n, namespace=NAMESPACE).ping.remote()) for n in CONTROL_NAMES}
    assert {n: p["pid"] for n, p in after.items()} == {n: p["pid"] for n, p in before.items()}


def test_status_reports_ray_actors_and_classes(rt: Runtime) -> None:
    st = runtime.status(rt.config)
    assert {"ray", "actors", "classes", "dashboard_url"} <= set(st)
    assert st["running"] is True
    assert st["ray"]["gcs_address"] == f"127.0.0.1:{rt.spec.ports['gcs_port']}"
    assert st["ray"]["loopback"] is True and st["ray"]["auth_mode"] == "token"
    assert [n["address"] for n in st["ray"]["nodes"]] == ["127.0.0.1"]
    assert st["ray"]["nodes"][0]["labels"]["rayinfra.io/role"] == "head"
    assert {n: a["state"] for n, a in st["actors"].items()} == dict.fromkeys(CONTROL_NAMES, "alive")
    assert st["classes"]["gpu_short"]["num_gpus"] == 1.0
    live = st["classes"]["cpu_short"]["live"]  # the scheduler's own view, merged in
    assert {"pending", "inflight", "limit", "executors"} <= set(live) and live["limit"] >= 1
    assert st["dashboard_url"] == f"http://127.0.0.1:{rt.spec.ports['dashboard_port']}"


def _call_until_restarted(fn, timeout_s: float = 60.0):
    """Call ``fn`` until the actor behind it answers again (Ray is restarting it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_change_feed_resumes_after_the_owner_is_killed_and_restarted(rt: Runtime) -> None:
    sched = ray.get_actor("scheduler", namespace=NAMESPACE)
    first = ray.get(sched.ping.remote())
    _, rows = ray.get(sched.changes.remote(0, None, 0.1))
    backlog = [decode_change(r) for r in rows]
    assert any(c["kind"] == "lifecycle" for c in backlog)
    seq, _ = ray.get(sched.changes.remote(FROM_NOW, None, 0.0))  # the head of the feed
    assert seq >= backlog[-1]["seq"]
    ev_seq, _ = ray.get(sched.events.remote(0, None, ["actor_started"], 100000))

    # a long-poll is in flight when the owner dies: the caller sees an error, nothing else
    # (asking for a task that does not exist: other tests' tasks finishing cannot answer it)
    in_flight = sched.changes.remote(seq, ["no-such-task"], 30.0)
    time.sleep(0.3)
    ray.kill(sched, no_restart=False)
    with pytest.raises((ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        ray.get(in_flight, timeout=30)

    # ... and resumes from the same sequence number once Ray has restarted the actor
    new_seq, rows = _call_until_restarted(
        lambda: ray.get(sched.changes.remote(seq, ["no-such-task"], 10.0))
    )
    items = [decode_change(r) for r in rows]
    second = ray.get(sched.ping.remote())
    assert second["pid"] != first["pid"]
    assert second["restarts"] == first["restarts"] + 1
    assert [i["kind"] for i in items] == ["lifecycle"]
    assert items[0]["data"]["pid"] == second["pid"]
    assert items[0]["data"]["restarts"] == second["restarts"]
    assert new_seq == items[0]["seq"] > seq
    # nothing older is replayed, and the cursor keeps working: an empty poll times out cleanly
    assert ray.get(sched.changes.remote(new_seq, ["no-such-task"], 0.2)) == (new_seq, [])

    # the shared events table recorded the restart, found by sequence number and by time
    _, events = ray.get(sched.events.remote(ev_seq, None, ["actor_started"], 100, 10.0))
    assert [(e["resource_id"], e["data"]["pid"]) for e in events] == [("scheduler", second["pid"])]
    _, by_time = ray.get(sched.events.remote(0, int(second["started_at"]), ["actor_started"]))
    assert ("scheduler", second["pid"]) in [(e["resource_id"], e["data"]["pid"]) for e in by_time]


# One runtime's life in a process of its own (a driver stays bound to its first cluster):
# start, the scheduler's restart count, Ray restarting the killed scheduler, the count again, stop.
RUNTIME_LIFE = textwrap.dedent(
    """
    import json, time
    import ray
    from rayinfra import runtime
    from rayinfra.config import load_config

    config = load_config().config
    runtime.start(config)
    try:
        sched = ray.get_actor("scheduler", namespace="rayinfra")
        first = ray.get(sched.ping.remote(), timeout=60)
        ray.kill(sched, no_restart=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                second = ray.get(sched.ping.remote(), timeout=5)
                if second["pid"] != first["pid"]:
                    break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass
            assert time.monotonic() < deadline, "the scheduler did not come back"
            time.sleep(0.2)
    finally:
        runtime.stop(config.state.dir, timeout_s=30, force=True)
    print(json.dumps([first["restarts"], second["restarts"]]))
    """
)


@pytest.mark.timeout(360)
def test_restart_counts_are_per_runtime(runtime_spec: RuntimeSpec) -> None:
    """``restarts`` counts Ray's restarts within one runtime; a stop and a start over the same
    state dir begins again at 0 (it used to go on counting from the previous runtimes)."""
    counts = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", RUNTIME_LIFE],
            env=runtime_spec.env(),
            capture_output=True,
            text=True,
            timeout=170,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert counts == [[0, 1], [0, 1]]


def test_events_long_poll_sees_other_actors_writes(rt: Runtime) -> None:
    """The events table is shared: a poll on one actor wakes for another actor's event."""
    sched = ray.get_actor("scheduler", namespace=NAMESPACE)
    gateway = ray.get_actor("gateway", namespace=NAMESPACE)
    seq, _ = ray.get(sched.events.remote(0, None, None, 100000))
    waiting = sched.events.remote(seq, None, ["actor_started"], 10, 30.0)
    time.sleep(0.3)
    ray.kill(gateway, no_restart=False)  # its restart appends actor_started
    t0 = time.monotonic()
    _, events = ray.get(waiting, timeout=60)
    assert [e["resource_id"] for e in events] == ["gateway"]
    assert time.monotonic() - t0 < 25  # woke on the event, not at the 30 s timeout
    _call_until_restarted(lambda: ray.get(gateway.ping.remote()))


def test_driver_that_imported_ray_first_connects(rt: Runtime) -> None:
    """A user process that did `import ray` before rayinfra, with no RAY_* variables set,
    still connects to the loopback head with Ray token auth on."""
    script = textwrap.dedent(
        f"""
        import json, os
        import ray  # first, with no RAY_* variables: Ray caches "not loopback", no auth
        from rayinfra import runtime
        from pathlib import Path
        info = runtime.connect(Path({str(rt.config.state.dir)!r}))
        ip = ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote(), timeout=60)
        print(json.dumps({{"ip": ip, "auth": os.environ.get("RAY_AUTH_MODE"),
                           "gcs": ray.get_runtime_context().gcs_address}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYINFRA_"))}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "ip": "127.0.0.1",
        "auth": "token",
        "gcs": f"127.0.0.1:{rt.spec.ports['gcs_port']}",
    }


def _collector(actor: object) -> tuple[tuple[int, int, int], bool]:
    import gc

    return gc.get_threshold(), gc.get_freeze_count() > 0


def test_control_actors_and_executors_run_with_the_collector_tuned(rt: Runtime) -> None:
    """Every control actor and executor process raised the cyclic collector's thresholds and
    froze what start-up built (:mod:`rayinfra.gc_tuning`); a process that only builds one of
    those classes (this test's, a unit test's) is left as it was."""
    from rayinfra import ActorTransport, AgentInfraSync, raywrap
    from rayinfra.gc_tuning import THRESHOLDS

    for name in sorted(CONTROL_NAMES):
        handle = ray.get_actor(name, namespace=NAMESPACE)
        assert ray.get(handle.__ray_call__.remote(_collector), timeout=60) == (THRESHOLDS, True)
    with AgentInfraSync(transport=ActorTransport(retry_for_s=30.0)) as infra:  # an executor runs
        tid = f"gc-{time.time_ns()}"
        infra.submit_task(tid, {"type": "noop"})
        assert infra.wait_task(tid, timeout=60)["status"] == "completed"
    executors = [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")])
        if a.name and a.name.startswith("executor-cpu_short")
    ]
    assert executors
    handle = ray.get_actor(executors[0].name, namespace=NAMESPACE)
    assert ray.get(handle.__ray_call__.remote(_collector), timeout=60) == (THRESHOLDS, True)
    assert not raywrap.in_actor() and _collector(None)[0] != THRESHOLDS

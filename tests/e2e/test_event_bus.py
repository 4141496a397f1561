"""The event bus on a real runtime with a real Kafka-protocol broker (Tansu): a runtime of its
own, started with the CLI and ``[events] kafka_bootstrap_servers`` pointing at a broker this
module starts (and kills, and starts again). A plain kafka-python consumer reads the topic live
for the whole module; tasks go in over gRPC; the events table is read straight from SQLite.

What is checked: every row of the events table reaches the topic once (when nothing fails),
with the original's envelope, keyed by resource id, matching the table and the gateway's
StreamEvents one for one; a broker killed mid-stream and started again, and the ``event_bus``
actor killed mid-stream (``ray.kill(no_restart=False)``), lose nothing and keep each key's order,
duplicates counted; the purge never deletes an event Kafka has not acknowledged.

The test broker keeps topics in memory, so what it acknowledged is gone when it is killed. To
make "nothing lost" checkable, the bus's process is paused (SIGSTOP) while the consumer catches
up and the broker is restarted with its topic re-created, then resumed: the events table keeps
filling throughout (tests/support/kafka.py has the broker's quirks).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest

from rayinfra.config import dial_addr
from rayinfra.events.publisher import rfc3339nano, source_of
from tests.support.kafka import (
    PUBLISH_BATCH,
    BusRuntime,
    assert_delivered_in_order,
    bus_runtime_fixture,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

bus_rt = bus_runtime_fixture()

KILL_BUS = """
import sys
from pathlib import Path
import ray
from rayinfra import raywrap, runtime
runtime.connect(Path(sys.argv[1]))
bus = raywrap.get_actor("event_bus")
print("ready", flush=True)
sys.stdin.readline()  # connected and ready: kill on the test's word
ray.kill(bus, no_restart=False)
"""


def submit_stream(rt: BusRuntime, prefix: str, batches: int, size: int = 50) -> list[str]:
    """Submit ``batches`` batches of no-op tasks, one every 50 ms (a thread of its own)."""
    ids: list[str] = []
    infra = rt.client()
    try:
        for b in range(batches):
            batch = [f"{prefix}-{b}-{i}" for i in range(size)]
            infra.submit_tasks([{"task_id": t, "payload": {"type": "noop"}} for t in batch])
            ids.extend(batch)
            time.sleep(0.05)
        infra.wait_tasks(ids, timeout=120)
    finally:
        infra.stop()
    return ids


def test_every_event_reaches_kafka_once_matching_the_table_and_stream_events(
    bus_rt: BusRuntime,
) -> None:
    rt = bus_rt
    assert rt.bus()["events"] == "publishing"
    since = int(time.time())
    ids = [f"one-{uuid.uuid4().hex[:6]}-{i}" for i in range(60)]
    rt.infra.submit_tasks([{"task_id": t, "payload": {"type": "noop"}} for t in ids])
    # one that runs long enough to have its task_started (a no-op ends before it is written)
    ids.append(f"one-slow-{uuid.uuid4().hex[:6]}")
    rt.infra.submit_tasks([{"task_id": ids[-1], "payload": {"type": "sleep", "seconds": 0.3}}])
    rt.infra.submit_tasks([{"task_id": "one-fail", "payload": {"type": "nosuchhandler"}}])
    assert {s["status"] for s in rt.infra.wait_tasks(ids, timeout=60)} == {"completed"}
    assert rt.infra.wait_task("one-fail", timeout=60)["status"] == "failed"
    rt.wait_caught_up()

    # the whole table, one for one: each row once, nothing that is not a row
    rows = rt.rows()
    assert rt.reader.seqs == {r[0] for r in rows}
    assert rt.reader.duplicates == 0
    got = rt.reader.by_seq()
    for seq, etype, rid, data, ts in rows:
        rec = got[seq]
        assert rec.key == rid.encode()
        expected = {**data, "resource_id": rid}
        if etype.startswith("task_"):
            expected["task_id"] = rid
        assert rec.envelope == {
            "type": etype,
            "timestamp": rfc3339nano(ts),
            "data": expected,
            "source": source_of(etype),
        }
    mine = [r for r in rows if r[2] in {*ids, "one-fail"}]
    assert {r[1] for r in mine} == {
        "task_submitted",
        "task_started",
        "task_completed",
        "task_failed",
    }
    assert {rec.envelope["source"] for s, rec in got.items() if rec.key == b"one-fail"} == {
        "orchestrator"
    }

    # the gateway's StreamEvents replays the same events, in the same order
    stream = rt.infra.stream_events(since_timestamp=since)
    replayed = []
    for ev in stream:
        if ev["resource_id"] in {*ids, "one-fail"}:
            replayed.append((ev["event_type"], ev["resource_id"], ev["data"]))
        if len(replayed) == len(mine):
            break
    stream.close()
    assert replayed == [(r[1], r[2], r[3]) for r in mine]
    from_kafka = [
        (got[r[0]].envelope["type"], got[r[0]].key.decode(), got[r[0]].envelope["data"])
        for r in mine
    ]
    strip = {"resource_id", "task_id"}
    assert [(t, k, {x: v for x, v in d.items() if x not in strip}) for t, k, d in from_kafka] == [
        (t, k, d) for t, k, d in replayed
    ]

    # `rayinfra events tail` prints the same feed
    tail = rt.cli("events", "tail", "--since", "10m", "--type", "task_completed", "--json")
    assert tail.returncode == 0, tail.stderr
    printed = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["resource_id"] for e in printed if e["resource_id"] in ids] == [
        r[2] for r in mine if r[1] == "task_completed"
    ]
    assert {e["event_type"] for e in printed} == {"task_completed"}

    # the metrics, on the orchestrator's /metrics as on GetMetrics
    m = rt.metrics()
    assert m["events_published_total"] >= len(rows) and m["events_publish_lag"] == 0
    http = dial_addr(rt.config.gateway.orchestrator_http_addr)
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "env_queue_depth" in text  # the scheduler's, and beside them the bus's
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("events_"))
    assert float(lines["events_published_total"]) >= len(rows)
    assert {"events_publish_lag", "events_publish_errors_total"} <= set(lines)


def test_a_broker_killed_mid_stream_loses_nothing_and_keeps_each_keys_order(
    bus_rt: BusRuntime,
) -> None:
    rt = bus_rt
    rt.wait_caught_up()
    start = rt.last_seq()
    ids: list[str] = []
    stream = threading.Thread(target=lambda: ids.extend(submit_stream(rt, "bk", 30)))
    stream.start()
    errors_before = rt.metrics()["events_publish_errors_total"]
    time.sleep(0.6)
    with rt.bus_paused():  # what the broker acknowledged is read before it dies with it
        rt.reader.read_until(lambda r: r.caught_up(), 30, "what the broker holds")
        before_kill = rt.last_seq()
        rt.broker.kill()
    time.sleep(2.5)  # the bus runs on without a broker while the table keeps filling
    outage = rt.metrics()
    with rt.bus_paused():
        rt.restart_broker()
    stream.join(120)
    assert len(ids) == 1500
    assert before_kill > start  # the stream was flowing before the kill, and after it:
    assert any(r[1] == "task_submitted" for r in rt.rows(before_kill))
    assert outage["events_publish_errors_total"] > errors_before  # unanswered rounds counted
    assert outage["events_publish_lag"] > 0
    duplicates = assert_delivered_in_order(rt, start)
    print(f"broker restart: {rt.last_seq() - start} events, {duplicates} read twice")
    assert duplicates <= PUBLISH_BATCH  # at most the round on the wire at the kill


def test_the_event_bus_killed_mid_stream_resumes_from_its_cursor(bus_rt: BusRuntime) -> None:
    rt = bus_rt
    rt.wait_caught_up()
    start = rt.last_seq()
    first = rt.bus()
    killer = subprocess.Popen(  # a Ray driver of the runtime, connected before the stream
        [sys.executable, "-c", KILL_BUS, str(rt.config.state.dir)],
        env=rt.spec.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert killer.stdout is not None and killer.stdin is not None
    assert killer.stdout.readline().strip() == "ready", killer.communicate(timeout=30)
    ids: list[str] = []
    stream = threading.Thread(target=lambda: ids.extend(submit_stream(rt, "ak", 30)))
    stream.start()
    time.sleep(0.6)
    _, err = killer.communicate("kill\n", timeout=60)
    assert killer.returncode == 0, err
    stream.join(120)
    assert len(ids) == 1500
    after = rt.bus()
    assert after["restarts"] == first["restarts"] + 1 and after["pid"] != first["pid"]
    duplicates = assert_delivered_in_order(rt, start)
    print(f"event_bus restart: {rt.last_seq() - start} events, {duplicates} read twice")
    assert duplicates <= PUBLISH_BATCH  # at most the round acknowledged but not yet recorded
    restarted = [r for r in rt.rows(start) if r[1] == "actor_started" and r[2] == "event_bus"]
    assert len(restarted) == 1 and restarted[0][0] in rt.reader.seqs
    # mid-stream: the stream's tasks were still coming in after the new incarnation started
    assert any(r[1] == "task_submitted" for r in rt.rows(restarted[0][0]))


def test_the_purge_keeps_every_event_kafka_has_not_acknowledged(bus_rt: BusRuntime) -> None:
    rt = bus_rt
    rt.wait_caught_up()
    errors_before = rt.metrics()["events_publish_errors_total"]
    rt.broker.kill()
    ids = [f"ret-{uuid.uuid4().hex[:6]}-{i}" for i in range(40)]
    rt.infra.submit_tasks([{"task_id": t, "payload": {"type": "noop"}} for t in ids])
    rt.infra.wait_tasks(ids, timeout=60)
    cursor = rt.cursor()
    unpublished = rt.rows(cursor)
    assert {r[2] for r in unpublished} >= set(ids)  # none of them reached Kafka
    time.sleep(1.2)  # every event above is now older than "now": a purge of age 0 matches it
    old_published = [r for r in rt.rows() if r[0] <= cursor]
    assert old_published

    deleted = rt.infra.purge_tasks(0)
    assert deleted["events"] == len(old_published)  # what Kafka has went
    left = rt.rows()
    assert left[: len(unpublished)] == unpublished  # what it has not stayed, however old
    assert all(r[0] > cursor for r in left)

    m = rt.metrics()  # the outage shows: errors counted, the lag at least what is held
    assert m["events_publish_errors_total"] > errors_before
    assert m["events_publish_lag"] >= len(unpublished)
    with rt.bus_paused():
        rt.restart_broker()
    rt.wait_caught_up(60.0)
    assert {r[0] for r in unpublished} <= rt.reader.seqs
    assert rt.metrics()["events_publish_lag"] == 0

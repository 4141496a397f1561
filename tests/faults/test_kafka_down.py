"""The Kafka broker goes down while tasks run and their events flow to it: a real runtime of
this module's own publishing to a real Kafka-protocol broker (Tansu; tests/support/kafka.py's
:func:`~tests.support.kafka.bus_runtime_fixture`, the one test_event_bus.py uses).

While the broker is down (killed by pid: connections refused): tasks go on being acknowledged
and completing; Health answers healthy (the broker is not needed to accept or run tasks); what
shows the outage is the ``event_bus`` actor's state ``retrying`` (``runtime_status()['actors']
['event_bus']['events']``, its ``ping``), ``events_publish_errors_total`` growing and
``events_publish_lag`` above 0. After the broker is back: every row of the events table reaches
Kafka, each key's events first read in ``seq`` order; the restarted broker holds each event
once, and the only events read twice are those of the round on the wire when the broker died
(at least once, docs/events.md), at most one round.

The broker keeps topics in memory, so what it acknowledged dies with it: before the kill the
bus is paused (SIGSTOP) while the reader reads everything the broker holds (as in
test_event_bus.py); the broker is started again with its topic re-created while the bus is
paused again.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.faults import TaskStream, assert_health, assert_none_lost
from tests.support.kafka import (
    PUBLISH_BATCH,
    BusRuntime,
    assert_delivered_in_order,
    bus_runtime_fixture,
)
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

bus_rt = bus_runtime_fixture("kdown")


def test_tasks_run_on_while_the_broker_is_down_and_every_event_arrives_after(
    bus_rt: BusRuntime,
) -> None:
    rt = bus_rt
    rt.wait_caught_up()
    start = rt.last_seq()
    errors_before = rt.metrics()["events_publish_errors_total"]
    stream = TaskStream(rt.client, f"kd-{uuid.uuid4().hex[:6]}", {"type": "sleep",
                        "seconds": 0.05}, batch=10, every_s=0.1)  # fmt: skip
    stream.start()
    try:
        stream.wait_for(50)
        with rt.bus_paused():  # what the broker acknowledged is read before it dies with it
            rt.reader.read_until(lambda r: r.caught_up(), 30, "what the broker holds")
            before_kill = rt.last_seq()
            rt.broker.kill()
        assert before_kill > start  # events were flowing to the broker
        killed_at = len(stream.acknowledged)
        # the outage: the bus says so, tasks go on, Health answers
        wait_until("the bus to report retrying", lambda: rt.bus()["events"] == "retrying", 30)
        stream.wait_for(killed_at + 100)
        done_in_outage = rt.infra.wait_tasks(stream.acknowledged[killed_at:], timeout=60)
        assert {d["status"] for d in done_in_outage} == {"completed"}
        health = assert_health(rt.infra)
        assert health["services"]["event_bus"] == "healthy", health  # not needed for tasks
        outage = rt.metrics()
        assert outage["events_publish_errors_total"] > errors_before
        assert outage["events_publish_lag"] > 0
        assert rt.cursor() < rt.last_seq()  # the table holds what Kafka has not acknowledged
        with rt.bus_paused():
            rt.restart_broker()
            rewound = len(rt.reader.records)  # what the restarted broker holds is read from here
        wait_until("the bus to publish again", lambda: rt.bus()["events"] == "publishing", 60)
    finally:
        ids = stream.stop()
    assert_none_lost(rt.infra, ids)
    duplicates = assert_delivered_in_order(rt, start)  # every row since the start, in order
    again = [r.seq for r in rt.reader.records[rewound:]]
    assert len(again) == len(set(again)), "the restarted broker holds an event twice"
    assert duplicates <= PUBLISH_BATCH  # at most the round on the wire when it died
    assert rt.metrics()["events_publish_lag"] == 0
    assert_health(rt.infra)
    print(
        f"{len(ids)} tasks; {rt.last_seq() - start} events, {duplicates} read twice "
        f"(the round in flight at the kill); lag in the outage {outage['events_publish_lag']:g}"
    )

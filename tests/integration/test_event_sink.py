"""The Kafka wrapper, the publisher and the event_bus actor's class on a real Kafka-protocol
broker (Tansu) and a real state store, without Ray: records, keys, headers and envelopes as a
plain kafka-python consumer reads them; a broker down at first; a broker killed with a round in
flight and started again (the round waits, then lands); a reset producer that must not deliver
later; the actor's loop, status and restart from its cursor. The whole bus on a real runtime:
tests/e2e/test_event_bus.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from rayinfra.actors.event_bus import EventBusActor
from rayinfra.config import RayinfraConfig, config_to_dict
from rayinfra.events.kafka import KafkaSink
from rayinfra.events.publisher import Publisher, encode, envelope
from rayinfra.store import EventRecord, StateStore
from tests.support.kafka import KafkaBroker, TopicReader, broker_fixture
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.integration

kafka_broker = broker_fixture()

KEYS = ["t-a", "t-b", "t-c", "svc", "run-1"]


def events(first: int, n: int) -> list[EventRecord]:
    return [
        EventRecord(
            seq,
            "task_completed" if seq % 2 else "service_healthy",
            KEYS[seq % len(KEYS)],
            {"n": seq, "ok": True},
            1_700_000_000 + seq,
        )
        for seq in range(first, first + n)
    ]


def publish_all(pub: Publisher, evs: list[EventRecord], batch: int = 100) -> None:
    while pub.cursor < evs[-1].seq:
        pending = [e for e in evs if e.seq > pub.cursor][:batch]
        assert not pub.start(pending).errors
        while pub.in_flight:
            report = pub.wait(5.0)
            assert not report.errors, report.error


def test_events_reach_the_topic_keyed_ordered_with_their_seq(kafka_broker: KafkaBroker) -> None:
    kafka_broker.create_topic("ev.basic", partitions=3)
    sink = KafkaSink(kafka_broker.bootstrap, "ev.basic", timeout_s=5.0)
    reader = TopicReader(kafka_broker.bootstrap, "ev.basic")
    try:
        evs = events(1, 500)
        pub = Publisher(sink, cursor=0)
        publish_all(pub, evs)
        assert pub.cursor == 500
        reader.read_until(lambda r: len(r.seqs) == 500, 20, "500 events")
        assert reader.duplicates == 0  # nothing went wrong: nothing twice
        got = reader.by_seq()
        for e in evs:
            rec = got[e.seq]
            assert rec.key == e.resource_id.encode()
            assert rec.envelope == envelope(e)
            assert rec.envelope == json.loads(encode(e).value)
        # one key, one partition; within it, seq order
        assert len({(r.key, r.partition) for r in reader.records}) == len(KEYS)
        want = {k.encode(): [e.seq for e in evs if e.resource_id == k] for k in KEYS}
        assert reader.first_occurrences() == want
        assert len({r.partition for r in reader.records}) > 1  # the keys did spread
    finally:
        reader.close()
        sink.close()


def test_a_broker_down_at_first_is_an_error_then_it_publishes(kafka_broker: KafkaBroker) -> None:
    kafka_broker.stop()
    sink = KafkaSink(kafka_broker.bootstrap, "ev.late", timeout_s=1.0)
    try:
        pub = Publisher(sink, cursor=0)
        report = pub.start(events(1, 5))
        assert report.round_over and report.errors == 1 and pub.cursor == 0
        assert "no Kafka broker" in report.error
        kafka_broker.start()
        publish_all(pub, events(1, 5))
        reader = TopicReader(kafka_broker.bootstrap, "ev.late")  # auto-created by the producer
        try:
            reader.read_until(lambda r: r.seqs == {1, 2, 3, 4, 5}, 20, "5 events")
        finally:
            reader.close()
    finally:
        sink.close()


def test_a_round_in_flight_waits_out_a_broker_restart(kafka_broker: KafkaBroker) -> None:
    topic = "ev.restart"
    kafka_broker.create_topic(topic)
    sink = KafkaSink(kafka_broker.bootstrap, topic, timeout_s=1.0)
    reader = TopicReader(kafka_broker.bootstrap, topic)
    try:
        pub = Publisher(sink, cursor=0)
        publish_all(pub, events(1, 50))
        reader.read_until(lambda r: len(r.seqs) == 50, 20, "the first 50")
        kafka_broker.kill()
        report = pub.start(events(51, 50))  # the producer knows the topic: it holds them
        assert report.errors == 0 and pub.in_flight == 50
        report = pub.wait(1.0)
        assert report.errors == 1 and not report.round_over and pub.cursor == 50
        assert "not acknowledged within 1s" in report.error
        kafka_broker.start()
        kafka_broker.create_topic(topic)  # the restarted broker kept nothing
        reader.rewind()
        while pub.in_flight:
            pub.wait(5.0)
        assert pub.cursor == 100
        reader.read_until(lambda r: r.seqs >= set(range(51, 101)), 20, "the second 50")
        want = {k.encode(): [e.seq for e in events(1, 100) if e.resource_id == k] for k in KEYS}
        assert reader.first_occurrences() == want
    finally:
        reader.close()
        sink.close()


def test_a_reset_sink_never_sends_what_it_held(kafka_broker: KafkaBroker) -> None:
    """After a failure the bus resets the sink and sends again from its cursor: the dropped
    producer must not deliver its old records later, behind the new ones."""
    topic = "ev.reset"
    kafka_broker.create_topic(topic)
    sink = KafkaSink(kafka_broker.bootstrap, topic, timeout_s=1.0, client_id="ev-reset")
    reader = TopicReader(kafka_broker.bootstrap, topic)

    def senders() -> int:  # kafka-python names its I/O thread after the client id
        return sum(t.name == "ev-reset-network-thread" for t in threading.enumerate())

    try:
        publish_all(Publisher(sink, cursor=0), events(1, 10))
        reader.read_until(lambda r: len(r.seqs) == 10, 20, "the first 10")
        kafka_broker.kill()
        held = Publisher(sink, cursor=10)
        held.start(events(11, 20))
        assert held.wait(0.5).errors == 1 and held.in_flight == 20
        assert senders() == 1
        sink.reset()  # what Publisher.wait does when a record fails
        assert senders() == 0  # gone, not retrying in the background
        kafka_broker.start()
        kafka_broker.create_topic(topic)
        reader.rewind()
        publish_all(Publisher(sink, cursor=30), events(31, 5))
        reader.read_until(lambda r: {31, 32, 33, 34, 35} <= r.seqs, 20, "the new 5")
        reader.poll(2.0)  # the old producer would have delivered by now (reconnect <= 2 s)
        assert reader.seqs & set(range(11, 31)) == set()
    finally:
        reader.close()
        sink.close()


def test_an_envelope_over_the_size_limit_arrives_cut(kafka_broker: KafkaBroker) -> None:
    sink = KafkaSink(kafka_broker.bootstrap, "ev.big", timeout_s=5.0, max_message_bytes=20_000)
    reader = TopicReader(kafka_broker.bootstrap, "ev.big")
    try:
        big = EventRecord(1, "task_completed", "t-big", {"result": "x" * 100_000}, 1_700_000_000)
        pub = Publisher(sink, cursor=0, max_message_bytes=20_000)
        report = pub.start([big, *events(2, 3)])
        assert report.truncated == 1
        assert pub.wait(5.0).cursor == 4
        reader.read_until(lambda r: r.seqs == {1, 2, 3, 4}, 20, "4 events")
        data = reader.by_seq()[1].envelope["data"]
        assert data["truncated"] is True and data["resource_id"] == "t-big"
        assert data["data_bytes"] > 100_000
    finally:
        reader.close()
        sink.close()


def test_pinned_or_unknown_producer_options_are_refused() -> None:
    with pytest.raises(ValueError, match="acks cannot be set"):
        KafkaSink("127.0.0.1:1", "t", options={"acks": 1})
    with pytest.raises(ValueError, match="lingerr_ms is not a KafkaProducer setting"):
        KafkaSink("127.0.0.1:1", "t", options={"lingerr_ms": 1})


# ------------------------------------------------------------- the actor shell, outside Ray


def bus_config(tmp_path: Path, bootstrap: str, **events: Any) -> dict[str, Any]:
    return config_to_dict(
        RayinfraConfig.model_validate(
            {
                "state": {"dir": str(tmp_path / "state")},
                "events": {
                    "kafka_bootstrap_servers": bootstrap,
                    "event_topic": "ev.actor",
                    "kafka_timeout_s": 1.0,
                    **events,
                },
            }
        )
    )


async def test_the_actor_publishes_the_table_and_a_new_one_resumes_from_its_cursor(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    kafka_broker.create_topic("ev.actor")
    cfg = bus_config(tmp_path, kafka_broker.bootstrap)
    store = StateStore(Path(cfg["state"]["dir"]) / "state.db")
    reader = TopicReader(kafka_broker.bootstrap, "ev.actor")
    try:
        store.append_events(events(0, 20)).result()  # written before the bus starts
        bus = EventBusActor(cfg)
        await wait_until_async("the bus to catch up", lambda: _caught_up(bus, store), 20, 0.05)
        st = await bus.status()
        assert st["state"] == "publishing" and st["lag"] == 0 and st["in_flight"] == 0
        assert st["published_total"] == store.last_event_seq()  # the 20 and its actor_started
        assert (await bus.ping())["events"] == "publishing"
        assert (await bus.metrics_snapshot())["events_publish_lag"] == 0
        await bus.shutdown()
        first = store.last_event_seq()
        assert store.kv_get("event_bus", "cursor") == first

        store.append_events(events(0, 5)).result()
        again = EventBusActor(cfg)  # a restart: from the stored cursor, nothing again
        await wait_until_async(
            "the second bus to catch up", lambda: _caught_up(again, store), 20, 0.05
        )
        await again.shutdown()
        reader.read_until(lambda r: len(r.seqs) == store.last_event_seq(), 20, "every row")
        assert reader.duplicates == 0
        assert sorted(reader.seqs) == list(range(1, store.last_event_seq() + 1))
    finally:
        reader.close()
        store.close()


async def test_a_misconfigured_bus_says_so_and_counts_what_it_holds(tmp_path: Path) -> None:
    cfg = bus_config(tmp_path, "127.0.0.1:1", kafka_options={"lingerr_ms": 5})
    bus = EventBusActor(cfg)
    try:
        st = await bus.status()
        assert st["state"] == "misconfigured" and "lingerr_ms" in st["reason"]
        assert st["errors_total"] == 1 and st["cursor"] == 0 and st["lag"] == st["latest_seq"] > 0
        assert (await bus.metrics_snapshot())["events_publish_lag"] == st["latest_seq"]
    finally:
        await bus.shutdown()


async def _caught_up(bus: EventBusActor, store: StateStore) -> bool:
    st = await bus.status()
    return bool(st["cursor"] == store.last_event_seq() and st["in_flight"] == 0)

"""The event bus's pure part: the original's envelope, record encoding, cursor arithmetic, and
rounds against a simulated broker (no Kafka, no Ray). The real broker is in
tests/integration/test_event_sink.py and tests/e2e/test_event_bus.py."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayinfra.config import RayinfraConfig
from rayinfra.events.publisher import (
    SEQ_HEADER,
    OutboundRecord,
    Publisher,
    SinkError,
    encode,
    envelope,
    initial_cursor,
    lag,
    rfc3339nano,
    source_of,
)
from rayinfra.store import EventRecord


def ev(seq: int, etype: str = "task_completed", rid: str = "t1", **data: object) -> EventRecord:
    return EventRecord(seq, etype, rid, dict(data), 1_700_000_000)


# --------------------------------------------------------------------------------- envelope


@pytest.mark.parametrize(
    ("etype", "source"),
    [
        ("task_submitted", "orchestrator"),
        ("task_retrying", "orchestrator"),
        ("workflow_started", "orchestrator"),
        ("step_failed", "orchestrator"),
        ("slurm_job_submitted", "slurm_bridge"),
        ("service_healthy", "env_manager"),
        ("actor_started", "rayinfra"),
        ("tasks", "rayinfra"),  # a prefix means the underscore too
    ],
)
def test_source_by_event_type(etype: str, source: str) -> None:
    assert source_of(etype) == source


def test_rfc3339nano_prints_what_go_prints() -> None:
    # Go: time.Unix(s, ns).UTC().Format(time.RFC3339Nano)
    assert rfc3339nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339nano(1_700_000_000) == "2023-11-14T22:13:20Z"
    assert rfc3339nano(1_700_000_000.5) == "2023-11-14T22:13:20.5Z"
    assert rfc3339nano(1_700_000_000.25) == "2023-11-14T22:13:20.25Z"  # trailing zeros dropped
    assert rfc3339nano(1.000000001) == "1970-01-01T00:00:01.000000001Z"


def test_envelope_is_the_originals_four_keys_with_resource_and_task_id() -> None:
    env = envelope(ev(7, "task_completed", "t-9", status="completed", result={"x": 1}))
    assert env == {
        "type": "task_completed",
        "timestamp": "2023-11-14T22:13:20Z",
        "data": {"status": "completed", "result": {"x": 1}, "resource_id": "t-9", "task_id": "t-9"},
        "source": "orchestrator",
    }
    svc = envelope(ev(8, "service_healthy", "kv", service="kv"))
    assert svc["data"] == {"service": "kv", "resource_id": "kv"} and svc["source"] == "env_manager"


def test_resource_id_as_the_original_filled_it() -> None:
    # the producer's resource id wins; a data.resource_id already there is kept
    assert envelope(ev(1, "x", "r", task_id="t"))["data"]["resource_id"] == "r"
    assert envelope(ev(1, "x", "r", resource_id="own"))["data"]["resource_id"] == "own"
    # without one: task_id, then run_id, workflow_id, job_id
    order = {"job_id": "j", "workflow_id": "w", "run_id": "u", "task_id": "t"}
    for expected in ("t", "u", "w", "j"):
        assert envelope(ev(1, "x", "", **order))["data"]["resource_id"] == expected
        order = {k: v for k, v in order.items() if v != expected}
    assert envelope(ev(1, "x", ""))["data"]["resource_id"] == ""


def test_encode_keys_by_resource_id_and_carries_the_seq() -> None:
    rec = encode(ev(42, "task_failed", "t-7", error="boom"))
    assert rec.seq == 42 and rec.key == b"t-7"
    assert rec.headers == ((SEQ_HEADER, b"42"),)
    assert json.loads(rec.value) == envelope(ev(42, "task_failed", "t-7", error="boom"))
    assert not rec.truncated


def test_an_envelope_over_the_limit_goes_out_with_its_data_cut() -> None:
    big = ev(5, "task_completed", "t-big", result={"blob": "x" * 50_000})
    rec = encode(big, max_message_bytes=10_000)
    assert rec.truncated and rec.size <= 10_000
    value = json.loads(rec.value)
    assert value["type"] == "task_completed" and value["source"] == "orchestrator"
    assert value["data"] == {
        "resource_id": "t-big",
        "task_id": "t-big",
        "truncated": True,
        "data_bytes": len(json.dumps(envelope(big)["data"], separators=(",", ":"))),
    }
    assert not encode(big, max_message_bytes=100_000).truncated


# ----------------------------------------------------------------------------------- cursor


def test_initial_cursor() -> None:
    assert initial_cursor(None, 10, 1) == 0  # first start: everything in the table
    assert initial_cursor(7, 10, 1) == 7
    assert initial_cursor(15, 10, 1) == 10  # a store that went back in time
    assert initial_cursor(3, 100, 51) == 50  # rows up to 50 are gone (purged before Kafka)
    assert initial_cursor("7", 10, 1) == 0 and initial_cursor(True, 10, 1) == 0
    assert initial_cursor(None, 0, None) == 0
    assert lag(10, 7) == 3 and lag(7, 10) == 0


# ----------------------------------------------------------------------------------- rounds


@dataclass
class FakeDelivery:
    done_: bool = False
    err: BaseException | None = None

    def done(self) -> bool:
        return self.done_

    def error(self) -> BaseException | None:
        return self.err


@dataclass
class FakeBroker:
    """A sink as the Kafka wrapper behaves: records held until a flush; on a flush each
    partition's held records (one Kafka batch: a round's records of that partition) meet one
    outcome: ``ack``, ``fail`` (not written), ``lost_ack`` (written, then the connection broke:
    failed, a duplicate later) or ``hold`` (no answer: the flush times out)."""

    partitions: int = 3
    outcomes: Iterator[str] = field(default_factory=lambda: iter(()))
    held: list[tuple[OutboundRecord, FakeDelivery]] = field(default_factory=list)
    log: dict[int, list[OutboundRecord]] = field(default_factory=dict)
    refuse: int = 0  # refuse the next N sends (SinkError)
    resets: int = 0

    def partition(self, key: bytes) -> int:
        return zlib.crc32(key) % self.partitions if len(key) > 1 else sum(key) % self.partitions

    def send(self, record: OutboundRecord) -> FakeDelivery:
        if self.refuse:
            self.refuse -= 1
            raise SinkError("no broker")
        d = FakeDelivery()
        self.held.append((record, d))
        return d

    def flush(self, timeout_s: float) -> bool:
        by_part: dict[int, list[tuple[OutboundRecord, FakeDelivery]]] = {}
        for rec, d in self.held:
            by_part.setdefault(self.partition(rec.key), []).append((rec, d))
        keep = []
        for part, items in sorted(by_part.items()):
            outcome = next(self.outcomes, "ack")
            if outcome == "hold":
                keep.extend(items)
                continue
            if outcome in ("ack", "lost_ack"):
                self.log.setdefault(part, []).extend(rec for rec, _ in items)
            for _, d in items:
                d.done_ = True
                d.err = None if outcome == "ack" else ConnectionError(outcome)
        self.held = keep
        return not keep

    def reset(self) -> None:
        self.resets += 1
        self.held = []

    def close(self) -> None:
        self.held = []


def run_to_end(
    pub: Publisher, events: list[EventRecord], batch: int, max_steps: int = 10_000
) -> list[int]:
    """The actor's loop, without the store: rounds of ``batch`` events after the cursor."""
    errors = []
    for _ in range(max_steps):
        if pub.cursor >= events[-1].seq:
            return errors
        if not pub.in_flight:
            report = pub.start([e for e in events if e.seq > pub.cursor][:batch])
            errors.append(report.errors)
            if report.round_over:
                continue
        errors.append(pub.wait(1.0).errors)
    raise AssertionError("did not finish")


def first_occurrences(log: dict[int, list[OutboundRecord]]) -> dict[bytes, list[int]]:
    """Per key, the seqs in the order a consumer first sees them."""
    seen: set[int] = set()
    out: dict[bytes, list[int]] = {}
    for records in log.values():
        for r in records:
            if r.seq not in seen:
                seen.add(r.seq)
                out.setdefault(r.key, []).append(r.seq)
    return out


def test_a_round_acknowledged_moves_the_cursor_to_its_end() -> None:
    sink = FakeBroker()
    pub = Publisher(sink, cursor=10)
    report = pub.start([ev(11), ev(12, rid="t2"), ev(13)])
    assert report.errors == 0 and not report.round_over and pub.in_flight == 3
    report = pub.wait(1.0)
    assert (report.cursor, report.published, report.errors, report.round_over) == (13, 3, 0, True)
    assert pub.cursor == 13 and pub.in_flight == 0


def test_an_unanswered_round_waits_counts_an_error_then_completes() -> None:
    sink = FakeBroker(partitions=1, outcomes=iter(["hold", "hold"]))
    pub = Publisher(sink, cursor=0)
    pub.start([ev(1), ev(2)])
    for _ in range(2):
        report = pub.wait(0.5)
        assert report.errors == 1 and not report.round_over and pub.cursor == 0
        assert "not acknowledged within 0.5s" in report.error
    report = pub.wait(0.5)
    assert (report.cursor, report.published, report.errors) == (2, 2, 0)
    assert sink.resets == 0  # waiting never drops the round


def test_a_failed_partition_ends_the_round_at_the_first_unacknowledged_event() -> None:
    sink = FakeBroker(partitions=2)
    keys = ["a", "b"]
    assert sink.partition(b"a") != sink.partition(b"b")
    events = [ev(i, rid=keys[(i - 1) % 2]) for i in range(1, 7)]  # a: 1,3,5  b: 2,4,6
    fail_b = {sink.partition(b"a"): "ack", sink.partition(b"b"): "fail"}
    sink.outcomes = iter([fail_b[0], fail_b[1]])
    pub = Publisher(sink, cursor=0)
    pub.start(events)
    report = pub.wait(1.0)
    assert report.round_over and report.errors == 1 and "ConnectionError: fail" in report.error
    assert report.cursor == 1 and report.published == 1  # 2 (b) failed: stop before it
    assert sink.resets == 1
    run_to_end(pub, events, batch=10)
    assert pub.cursor == 6
    assert first_occurrences(sink.log) == {b"a": [1, 3, 5], b"b": [2, 4, 6]}
    dups = sum(len(v) for v in sink.log.values()) - 6
    assert dups == 2  # 3 and 5 went again


def test_a_refused_send_ends_the_round_where_it_happened() -> None:
    sink = FakeBroker(refuse=1)
    pub = Publisher(sink, cursor=0)
    report = pub.start([ev(1), ev(2)])
    assert report.round_over and report.errors == 1 and report.error == "SinkError: no broker"
    assert pub.cursor == 0 and pub.in_flight == 0
    report = pub.start([ev(1), ev(2)])
    assert report.errors == 0 and pub.wait(1.0).cursor == 2


def test_a_round_holds_at_most_max_round_bytes_but_at_least_one_event() -> None:
    events = [ev(i, result="x" * 400) for i in range(1, 11)]
    size = encode(events[0]).size
    pub = Publisher(FakeBroker(), cursor=0, max_round_bytes=size * 3 + 1)
    pub.start(events)
    assert pub.in_flight == 3
    assert pub.wait(1.0).cursor == 3
    tiny = Publisher(FakeBroker(), cursor=0, max_round_bytes=1)
    tiny.start(events)
    assert tiny.in_flight == 1
    with pytest.raises(RuntimeError):
        tiny.start(events)


def test_skip_to_moves_past_an_empty_scan_only_between_rounds() -> None:
    pub = Publisher(FakeBroker(partitions=1, outcomes=iter(["hold"])), cursor=3)
    pub.skip_to(9)
    assert pub.cursor == 9
    pub.start([ev(10)])
    pub.wait(0.1)
    pub.skip_to(20)  # a round is in flight: its events are not past
    assert pub.cursor == 9


OUTCOMES = st.lists(st.sampled_from(["ack", "ack", "fail", "lost_ack", "hold"]), max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.sampled_from("abcde"), min_size=1, max_size=60),
    outcomes=OUTCOMES,
    batch=st.integers(1, 12),
    refusals=st.integers(0, 3),
)
def test_every_event_arrives_and_each_key_in_order(
    keys: list[str], outcomes: list[str], batch: int, refusals: int
) -> None:
    """Whatever the broker does (failures, lost acknowledgements, silence), every event arrives
    and a consumer sees each key's events first in seq order; duplicates only re-send."""
    events = [ev(i + 1, rid=k) for i, k in enumerate(keys)]
    sink = FakeBroker(outcomes=iter(outcomes), refuse=refusals)
    pub = Publisher(sink, cursor=0)
    run_to_end(pub, events, batch)
    assert pub.cursor == len(events)
    want: dict[bytes, list[int]] = {}
    for e in events:
        want.setdefault(e.resource_id.encode(), []).append(e.seq)
    assert first_occurrences(sink.log) == want


# ----------------------------------------------------------------------------------- config


def test_event_bus_config_defaults_and_checks() -> None:
    ev_cfg = RayinfraConfig().events
    assert ev_cfg.kafka_bootstrap_servers is None and ev_cfg.event_topic == "agent.events"
    assert (ev_cfg.publish_batch, ev_cfg.kafka_timeout_s) == (1000, 10.0)
    assert ev_cfg.kafka_max_message_bytes == 1_000_000 and ev_cfg.kafka_options == {}
    assert ev_cfg.publish_priority == "idle"
    ok = RayinfraConfig.model_validate(
        {"events": {"kafka_bootstrap_servers": "127.0.0.1:9092,kafka-b:9093"}}
    )
    assert ok.events.kafka_bootstrap_servers == "127.0.0.1:9092,kafka-b:9093"
    with pytest.raises(ValueError, match="is not host:port"):
        RayinfraConfig.model_validate({"events": {"kafka_bootstrap_servers": "kafka"}})
    with pytest.raises(ValueError, match="acks, enable_idempotence cannot be set"):
        RayinfraConfig.model_validate(
            {"events": {"kafka_options": {"enable_idempotence": True, "acks": 1}}}
        )

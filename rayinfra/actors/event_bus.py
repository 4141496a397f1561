"""The ``event_bus`` control actor: every row of the events table, in seq order, to Kafka.

A thin shell: :class:`~rayinfra.events.publisher.Publisher` decides (rounds, cursor), the
:class:`~rayinfra.events.kafka.KafkaSink` talks to the broker, this actor moves rows between
the state store and them and keeps the cursor durable (kv ``event_bus/cursor``). Producers
(scheduler, gateway, registry, ...) only ever write the events table; nothing waits on Kafka.
A restarted actor (Ray restarts it) resumes from the stored cursor. Without
``events.kafka_bootstrap_servers`` it idles and says so in :meth:`status`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from rayinfra.actors.base import ControlActor
from rayinfra.events.metrics import EventBusMetrics
from rayinfra.events.publisher import Publisher, StepReport, describe, initial_cursor, lag
from rayinfra.store import EVENT_BUS_CURSOR

log = logging.getLogger(__name__)

SCAN_WAIT_S = 5.0  # one scan of the events table waits this long for a new row
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
CLOSE_TIMEOUT_S = 2.0
IDLE_REASON = (
    "no Kafka broker configured (events.kafka_bootstrap_servers / KAFKA_BOOTSTRAP_SERVERS): "
    "events stay in the state store only"
)


class EventBusActor(ControlActor):
    NAME = "event_bus"
    metrics: EventBusMetrics

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        ev = self.config.events
        self.metrics = EventBusMetrics()
        self.state = "idle"
        self.reason = IDLE_REASON
        self.last_error = ""
        self.last_error_at: float | None = None
        self.truncated = 0
        self.publisher: Publisher | None = None
        self._saved_cursor: int | None = None
        # one thread publishes; the producer's I/O thread, started by it, inherits its priority
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="event-bus",
            initializer=idle_priority if ev.publish_priority == "idle" else None,
        )
        self._tasks = [asyncio.create_task(self.publishing_metrics())]
        if ev.kafka_bootstrap_servers is None:
            log.info("event bus idle: %s", IDLE_REASON)
            return
        from rayinfra.events.kafka import KafkaSink  # kafka-python: only when configured

        try:
            sink = KafkaSink(
                ev.kafka_bootstrap_servers,
                ev.event_topic,
                timeout_s=ev.kafka_timeout_s,
                max_message_bytes=ev.kafka_max_message_bytes,
                options=ev.kafka_options,
            )
        except ValueError as e:  # reported by status; events stay in the store, unpurged
            self._note_error(str(e))
            self.state, self.reason = "misconfigured", str(e)
            log.error("event bus not publishing: %s", e)
            return
        stored = self.store.kv_get(*EVENT_BUS_CURSOR)
        cursor = initial_cursor(stored, self.store.last_event_seq(), self.store.first_event_seq())
        self._saved_cursor = stored if stored == cursor else None
        self.publisher = Publisher(sink, cursor, max_message_bytes=ev.kafka_max_message_bytes)
        self.state = "publishing"
        self.reason = f"to topic {ev.event_topic!r} on {ev.kafka_bootstrap_servers}"
        log.info("event bus publishing from seq %d %s", cursor, self.reason)
        self._tasks.append(asyncio.create_task(self._run(self.publisher)))

    # ------------------------------------------------------------------ the loop
    async def _run(self, pub: Publisher) -> None:
        ev = self.config.events
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                if not pub.in_flight:
                    seq, rows = await self.poll_events(
                        pub.cursor, limit=ev.publish_batch, timeout_s=SCAN_WAIT_S
                    )
                    if not rows:
                        pub.skip_to(seq)
                        await self._save_cursor(pub.cursor)
                        continue
                    report = await self._in_worker(pub.start, rows)
                    self._account(report)
                    if report.round_over:  # the sink took nothing: no broker reachable
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX_S)
                        continue
                report = await self._in_worker(pub.wait, ev.kafka_timeout_s)
                self._account(report)
                await self._save_cursor(pub.cursor)
                if report.errors and report.round_over:  # a record failed: resend from cursor
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                elif not report.errors:
                    backoff = BACKOFF_FIRST_S
            except Exception as e:  # a bug or the store: logged, counted, retried
                log.exception("event bus step failed")
                self._note_error(describe(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _in_worker(self, fn: Callable[..., StepReport], *args: Any) -> StepReport:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _account(self, report: StepReport) -> None:
        self.metrics.published.inc(report.published)
        self.truncated += report.truncated
        if report.errors:
            self._note_error(report.error, report.errors)
        elif report.published:
            self.state = "publishing"

    def _note_error(self, error: str, count: int = 1) -> None:
        self.metrics.errors.inc(count)
        self.state = "retrying"
        self.last_error, self.last_error_at = error, time.time()

    async def _save_cursor(self, cursor: int) -> None:
        """Persist the cursor (what the purge keeps events after, and a restart resumes from)."""
        if cursor != self._saved_cursor:
            await asyncio.wrap_future(self.store.kv_put(*EVENT_BUS_CURSOR, cursor))
            self._saved_cursor = cursor

    # ------------------------------------------------------------------ introspection
    async def ping(self) -> dict[str, Any]:
        out = await super().ping()
        out["events"] = self.state
        return out

    async def status(self) -> dict[str, Any]:
        """``state``: ``idle`` (no broker configured), ``misconfigured``, ``publishing`` or
        ``retrying`` (the last step failed or timed out: ``last_error``); ``reason`` says why
        or where to; ``cursor``, ``latest_seq``, ``lag``, ``in_flight`` and the counters."""
        latest, cursor = await asyncio.to_thread(self._positions)
        pub, ev = self.publisher, self.config.events
        counters = self.metrics.snapshot()
        return {
            "state": self.state,
            "reason": self.reason,
            "bootstrap_servers": ev.kafka_bootstrap_servers,
            "topic": ev.event_topic if ev.kafka_bootstrap_servers else None,
            "cursor": cursor,
            "latest_seq": latest,
            "lag": lag(latest, cursor) if cursor is not None else 0,
            "in_flight": pub.in_flight if pub is not None else 0,
            "published_total": int(counters["events_published_total"]),
            "errors_total": int(counters["events_publish_errors_total"]),
            "truncated_total": self.truncated,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def _positions(self) -> tuple[int, int | None]:
        """(latest event seq, the cursor): the publisher's, or with a broker configured but not
        publishing (misconfigured) the stored one; ``None`` without a broker."""
        latest = self.store.last_event_seq()
        if self.publisher is not None:
            return latest, self.publisher.cursor
        if self.config.events.kafka_bootstrap_servers is None:
            return latest, None
        return latest, initial_cursor(self.store.kv_get(*EVENT_BUS_CURSOR), latest, None)

    async def refresh_metrics(self) -> None:
        latest, cursor = await asyncio.to_thread(self._positions)
        self.metrics.lag.set(lag(latest, cursor) if cursor is not None else 0)

    async def shutdown(self) -> bool:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.publisher.sink.close)
        self._worker.shutdown(wait=False, cancel_futures=True)
        return await super().shutdown()


def idle_priority() -> None:
    """Put the calling thread (and the threads it starts) under Linux's SCHED_IDLE policy: it
    runs on CPU nothing else wants. Elsewhere, or if refused, it stays as it is."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as e:
        log.warning("event bus: publishing at normal priority (SCHED_IDLE unavailable: %s)", e)

"""What goes to Kafka, and how far it got: the pure part of the event bus.

The events table is the spool. Its rows go out in **rounds**, in ``seq`` order: a round is the
next rows after the **cursor**, handed to a :class:`Sink` (the Kafka wrapper, or a fake) and
waited for. The cursor is the highest seq that was acknowledged together with every row before
it, so after a broker outage or a restart the bus sends again from the cursor: every event at
least once, and for each key (resource id) in seq order. A round ends before the next begins,
and the sink sends each key's records of a round together (one Kafka batch per partition), so
they are acknowledged or fail together. A failure ends the round at once (the sink drops what it
still holds) and the next round starts from the cursor: no later event of a key can overtake an
earlier one; the price is that acknowledged events of other keys in that round go out twice.

An event becomes the original orchestrator's envelope (seed-system §4.8) as the value of one
record: ``{"type", "timestamp" (RFC3339Nano, UTC), "data", "source"}``, with ``data.resource_id``
filled in as the original did; the key is the resource id and header ``rayinfra-seq`` carries the
event's seq (for consumers that drop duplicates). Nothing here imports Ray, Kafka or subprocess.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from rayinfra.store import EventRecord

SEQ_HEADER = "rayinfra-seq"
"""Kafka header of every record: the event's seq in the state store (decimal ASCII)."""

#: event type prefix -> the envelope's ``source`` (the original's component names)
SOURCES: tuple[tuple[str, str], ...] = (
    ("task_", "orchestrator"),
    ("workflow_", "orchestrator"),
    ("step_", "orchestrator"),
    ("slurm_", "slurm_bridge"),
    ("service_", "env_manager"),
)
DEFAULT_SOURCE = "rayinfra"

#: where the original looked for ``data.resource_id`` when the event did not name one
RESOURCE_ID_KEYS = ("task_id", "run_id", "workflow_id", "job_id")

RECORD_OVERHEAD_BYTES = 128
"""What a record costs beyond its key, value and headers (record and batch headers, roughly)."""

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # under Kafka's default message.max.bytes (1,048,588)
DEFAULT_MAX_ROUND_BYTES = 1024 * 1024  # the sink's batches hold a whole round


def source_of(event_type: str) -> str:
    """The envelope's ``source``: ``orchestrator`` (task_*, workflow_*, step_*), ``slurm_bridge``
    (slurm_*), ``env_manager`` (service_*), else ``rayinfra``."""
    for prefix, source in SOURCES:
        if event_type.startswith(prefix):
            return source
    return DEFAULT_SOURCE


def rfc3339nano(ts: float) -> str:
    """``ts`` (unix seconds) the way Go's ``time.RFC3339Nano`` prints a UTC time: trailing zeros
    of the fraction dropped, no fraction at all for a whole second, ``Z`` for UTC."""
    if isinstance(ts, int):
        return _whole_second(ts)  # the events table's timestamps: many events share one
    secs = math.floor(ts)
    frac = round((ts - secs) * 1_000_000_000)  # of the fraction alone: a float keeps ~16 digits
    if frac >= 1_000_000_000:
        secs, frac = secs + 1, 0
    text = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


@functools.lru_cache(maxsize=256)
def _whole_second(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def resource_id_of(event: EventRecord) -> str:
    """The event's resource id: the one its producer recorded (the events table's column), else,
    as the original filled ``data.resource_id``, the first of task_id, run_id, workflow_id, job_id
    found in its data ("" if none)."""
    if event.resource_id:
        return event.resource_id
    for key in RESOURCE_ID_KEYS:
        value = event.data.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def envelope(event: EventRecord) -> dict[str, Any]:
    """The original's event JSON: ``{type, timestamp, data, source}``. ``data`` is the event's
    data with ``resource_id`` set (a value already there is kept, as the original kept it) and,
    for task events, ``task_id`` (the original's task events carried it)."""
    rid = resource_id_of(event)
    data = dict(event.data)
    data.setdefault("resource_id", rid)
    if event.event_type.startswith("task_"):
        data.setdefault("task_id", rid)
    return {
        "type": event.event_type,
        "timestamp": rfc3339nano(event.timestamp),
        "data": data,
        "source": source_of(event.event_type),
    }


@dataclass(frozen=True)
class OutboundRecord:
    """One Kafka record: the event's seq, its key (resource id), value (envelope) and headers."""

    seq: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    truncated: bool = False

    @functools.cached_property
    def size(self) -> int:
        """Bytes the record takes in a produce request, roughly (what the size limit compares)."""
        extra = sum(len(k) + len(v) for k, v in self.headers)
        return len(self.key) + len(self.value) + extra + RECORD_OVERHEAD_BYTES


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def encode(
    event: EventRecord, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> OutboundRecord:
    """The record for ``event``. An envelope that would exceed ``max_message_bytes`` (a task result
    of megabytes) goes out with its data cut to ``{resource_id, task_id?, truncated: true,
    data_bytes}``: a record the broker can never take would stop every later event."""
    env = envelope(event)
    rid = env["data"]["resource_id"]
    headers = ((SEQ_HEADER, str(event.seq).encode()),)
    key = str(rid).encode()
    record = OutboundRecord(event.seq, key, _dumps(env), headers)
    if record.size <= max_message_bytes:
        return record
    stub: dict[str, Any] = {"resource_id": rid}
    if "task_id" in env["data"]:
        stub["task_id"] = env["data"]["task_id"]
    stub.update(truncated=True, data_bytes=len(_dumps(env["data"])))
    return OutboundRecord(event.seq, key, _dumps({**env, "data": stub}), headers, truncated=True)


# ------------------------------------------------------------------------------------ cursor


def initial_cursor(stored: Any, latest_seq: int, first_seq: int | None) -> int:
    """The cursor to resume from: the stored one (0 if none or unreadable), never beyond the
    latest seq (a cursor from a store that went back in time would skip new events), and never
    below the row before the first existing one (what was purged is not there to send)."""
    cursor = stored if isinstance(stored, int) and not isinstance(stored, bool) else 0
    cursor = max(0, min(cursor, latest_seq))
    if first_seq is not None:
        cursor = max(cursor, first_seq - 1)
    return cursor


def lag(latest_seq: int, cursor: int) -> int:
    """Events not yet acknowledged: seqs are consecutive (SQLite AUTOINCREMENT inside one
    writer, rolled-back inserts give their numbers back) and nothing after the cursor is purged
    while a broker is configured, so this is the row count."""
    return max(0, latest_seq - cursor)


# ------------------------------------------------------------------------------------ rounds


class SinkError(Exception):
    """The sink could not take a record (no broker reachable, metadata timed out, ...)."""


class Delivery(Protocol):
    """The outcome of one record handed to a sink."""

    def done(self) -> bool:
        """Acknowledged or failed for good."""
        ...

    def error(self) -> BaseException | None:
        """Why it failed (``None`` while pending or once acknowledged)."""
        ...


class Sink(Protocol):
    """Where records go (the Kafka wrapper). Records handed over reach the broker in the order
    given, per key; a record is retried by the sink until acknowledged or failed for good."""

    def send(self, record: OutboundRecord) -> Delivery:
        """Hand over one record; :class:`SinkError` if it could not be taken at all."""
        ...

    def flush(self, timeout_s: float) -> bool:
        """Push out what is held and wait up to ``timeout_s``; ``True`` if every record handed
        over is done (acknowledged or failed)."""
        ...

    def reset(self) -> None:
        """Drop every record still held (their deliveries no longer matter) and start afresh."""
        ...

    def close(self) -> None:
        """Release the connection (records still held may be lost: they go again)."""
        ...


@dataclass
class StepReport:
    """What one :meth:`Publisher.start` or :meth:`Publisher.wait` did."""

    cursor: int  # the cursor afterwards
    published: int = 0  # records newly acknowledged
    errors: int = 0  # failures counted (a record refused or failed, a wait that timed out)
    round_over: bool = True  # no round in flight any more
    error: str = ""  # the last failure ("" if none)
    truncated: int = 0  # records sent with their data cut to fit the size limit


def acked_prefix(deliveries: Sequence[Delivery]) -> tuple[int, BaseException | None]:
    """``(n, failure)``: the first ``n`` deliveries are acknowledged; ``failure`` is the error of
    the one after them if it failed (``None`` if it is pending, or there is none)."""
    n = 0
    for d in deliveries:
        if not d.done():
            return n, None
        err = d.error()
        if err is not None:
            return n, err
        n += 1
    return n, None


def describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Publisher:
    """Rounds of events into a :class:`Sink`, and the cursor they reached.

    Blocking (the sink blocks): an actor calls it from one worker thread at a time.
    """

    def __init__(
        self,
        sink: Sink,
        cursor: int = 0,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_round_bytes: int = DEFAULT_MAX_ROUND_BYTES,
    ) -> None:
        self.sink = sink
        self.cursor = cursor
        self.max_message_bytes = max_message_bytes
        self.max_round_bytes = max_round_bytes
        self._round: list[tuple[int, Delivery]] = []
        self._acked = 0  # acknowledged records of the round in flight, already reported

    @property
    def in_flight(self) -> int:
        """Records of the current round not yet accounted for (0: no round)."""
        return len(self._round) - self._acked if self._round else 0

    def skip_to(self, seq: int) -> None:
        """No event exists after the cursor up to ``seq`` (an empty scan): move past them."""
        if not self._round:
            self.cursor = max(self.cursor, seq)

    def start(self, events: Sequence[EventRecord]) -> StepReport:
        """Begin a round with ``events`` (ascending seqs after the cursor). It holds as many as
        fit ``max_round_bytes`` (at least one); the rest are read again for the next round. A
        :class:`SinkError` ends the round where it happened (counted as an error)."""
        if self._round:
            raise RuntimeError("a round is already in flight")
        report = StepReport(self.cursor, round_over=False)
        size = 0
        for event in events:
            record = encode(event, self.max_message_bytes)
            if self._round and size + record.size > self.max_round_bytes:
                break
            try:
                delivery = self.sink.send(record)
            except SinkError as e:
                report.errors += 1
                report.error = describe(e)
                break
            size += record.size
            report.truncated += record.truncated
            self._round.append((record.seq, delivery))
        self._acked = 0
        report.round_over = not self._round
        return report

    def wait(self, timeout_s: float) -> StepReport:
        """Wait up to ``timeout_s`` for the round; move the cursor over its acknowledged prefix.
        A failed record ends the round (the sink is reset); a wait that times out counts as an
        error and leaves the round in flight, for the sink to keep retrying."""
        if not self._round:
            return StepReport(self.cursor)
        settled = self.sink.flush(timeout_s)
        n, failure = acked_prefix([d for _, d in self._round])
        report = StepReport(self.cursor, published=n - self._acked, round_over=False)
        self._acked = n
        if n:
            self.cursor = report.cursor = max(self.cursor, self._round[n - 1][0])
        if failure is not None:
            # everything after the failed record is dropped and sent again, from the cursor
            self.sink.reset()
            report.errors, report.error = 1, describe(failure)
            self._round = []
        elif n == len(self._round):
            self._round = []
        elif not settled:
            waiting = len(self._round) - n
            report.errors = 1
            report.error = (
                f"{waiting} of {len(self._round)} events not acknowledged within {timeout_s:g}s "
                "(broker unreachable?); still retrying"
            )
        report.round_over = not self._round
        return report

"""What every control actor shares: config, state store, lifecycle record, feeds, ping.

Control actors are thin shells (DESIGN.md): they hold a :class:`~rayinfra.store.StateStore`, a
:class:`~rayinfra.store.ChangeFeed` of their own and read access to the shared ``events`` table.
On every (re)start an actor appends an ``actor_started`` event and a ``lifecycle`` change, so a
caller following either feed by sequence number sees restarts and resumes where it left off.
The class has no Ray import; :mod:`rayinfra.raywrap` turns it into a Ray actor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

from rayinfra import raywrap
from rayinfra._version import __version__
from rayinfra.config import RayinfraConfig
from rayinfra.gc_tuning import tune_for_long_lived_process
from rayinfra.metrics import PrivateMetrics
from rayinfra.store import (
    ChangeFeed,
    ChangeRecord,
    EventFilter,
    EventRecord,
    RawEvent,
    SeqNotifier,
    StateStore,
    decode_event,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

EVENT_POLL_INTERVAL_S = 0.25
METRICS_PUBLISH_S = 5.0  # how often an actor's metrics are mirrored into Ray's


class EventWait(EventFilter, total=False):
    """Which events :meth:`ControlActor.poll_event_rows` waits for, and how long."""

    timeout_s: float


class ControlActor:
    """Base of the named control actors (``scheduler``, ``service_registry``, ...)."""

    NAME: ClassVar[str] = ""
    metrics: PrivateMetrics | None = None
    """This actor's metrics, if it has any: read through :meth:`metrics_snapshot` and
    :meth:`metrics_text`, mirrored into Ray's by :meth:`publishing_metrics`."""

    def __init__(self, config: dict[str, Any]) -> None:
        if raywrap.in_actor():  # (not when a test builds one in its own process)
            tune_for_long_lived_process()
        self.config = RayinfraConfig.model_validate(config)
        self.store = StateStore(
            self.config.state.db_path,
            synchronous=self.config.state.synchronous,
            group_commit_max=self.config.state.group_commit_max,
        )
        self.started_at = time.time()
        self.pid = os.getpid()
        self.restarts = self._count_start()
        record = {
            "actor": self.NAME,
            "pid": self.pid,
            "restarts": self.restarts,
            "host": socket.gethostname(),
        }
        self.store.append_events(
            [EventRecord(0, "actor_started", self.NAME, record, int(self.started_at))]
        ).result()
        self.store.append_changes(
            [
                ChangeRecord(
                    0,
                    self.NAME,
                    self.NAME,
                    "lifecycle",
                    {"event": "started", **record},
                    self.started_at,
                )
            ]
        ).result()
        self.feed = ChangeFeed(self.store, self.NAME)
        self._events_notifier: SeqNotifier | None = None
        self._ray_metrics: raywrap.RayMetricsMirror | None = None

    def _count_start(self) -> int:
        """Restarts of this actor within this runtime: Ray keeps an actor's id when it restarts
        it, and a new runtime creates a new actor, so the count is kept per actor id (outside
        Ray, where there is no id, every instance over the same store counts as a restart)."""
        actor_id = raywrap.current_actor_id() or ""
        last = self.store.kv_get("actor_starts", self.NAME)
        same = isinstance(last, dict) and last.get("actor_id") == actor_id
        restarts = int(last["restarts"]) + 1 if same else 0
        self.store.kv_put(
            "actor_starts", self.NAME, {"actor_id": actor_id, "restarts": restarts}
        ).result()
        return restarts

    # ---- liveness ---------------------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        """Cheap liveness probe; also says which incarnation answered."""
        return {
            "name": self.NAME,
            "pid": self.pid,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "version": __version__,
            "schema_version": self.store.schema_version,
        }

    # ---- feeds ------------------------------------------------------------------------------
    async def changes(
        self, after_seq: int = 0, keys: Collection[str] | None = None, timeout_s: float = 30.0
    ) -> tuple[int, list[dict[str, Any]]]:
        """Long-poll this actor's change feed: ``(seq, changes)`` with every change after ``after_seq``.

        Pass the returned ``seq`` back to resume, including after this actor was restarted.
        """
        seq, items = await self.feed.wait(after_seq, keys=keys, timeout_s=timeout_s)
        return seq, [_change_dict(c) for c in items]

    async def events(
        self,
        after_seq: int = 0,
        since_ts: int | None = None,
        types: Collection[str] | None = None,
        limit: int = 1000,
        timeout_s: float = 0.0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Events from the shared events table (every producer), ascending by sequence number.

        ``since_ts`` (unix seconds, inclusive) is an alternative to ``after_seq``. With
        ``timeout_s > 0`` this long-polls until a matching event after ``after_seq`` exists.
        The returned seq is the cursor to pass next time (a cursor "from the future", such as
        ``2**62``, means "from now on" and comes back as the latest seq).
        """
        seq, rows = await self.poll_events(
            after_seq, since_ts=since_ts, types=types, limit=limit, timeout_s=timeout_s
        )
        return seq, [_event_dict(e) for e in rows]

    async def poll_events(
        self, after_seq: int, **wait: Unpack[EventWait]
    ) -> tuple[int, list[EventRecord]]:
        """Matching events after ``after_seq``, waiting up to ``timeout_s`` for the first one."""
        seq, rows = await self.poll_event_rows(after_seq, **wait)
        return seq, [decode_event(r) for r in rows]

    async def poll_event_rows(
        self,
        after_seq: int,
        *,
        since_ts: int | None = None,
        types: Collection[str] | None = None,
        resource_ids: Collection[str] | None = None,
        limit: int = 1000,
        timeout_s: float = 0.0,
        keep: Callable[[RawEvent], bool] | None = None,
    ) -> tuple[int, list[RawEvent]]:
        """:meth:`poll_events` as stored (``data`` JSON text, not decoded); with ``keep``, only
        the rows it keeps (the wait goes on past those it drops)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        notifier = self._events()
        type_set = set(types) if types else None
        id_set = set(resource_ids) if resource_ids is not None else None
        cursor = max(after_seq, 0)
        while True:
            latest, rows = await asyncio.to_thread(
                self._scan_events, cursor, since_ts, type_set, id_set, limit
            )
            notifier.advance(latest)
            if rows and keep is not None:
                scanned, rows = rows[-1][0], [r for r in rows if keep(r)]
                if not rows:  # none kept up to there: scan on from it, or say how far it got
                    if loop.time() >= deadline:
                        return scanned, []
                    cursor = scanned
                    continue
            if rows:
                return rows[-1][0], rows
            cursor = latest  # nothing matched up to latest (also pulls a future cursor back)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return cursor, []
            await notifier.wait_beyond(
                cursor,
                remaining,
                poll_interval_s=EVENT_POLL_INTERVAL_S,
                poll=lambda: asyncio.to_thread(self.store.last_event_seq),
            )

    def _scan_events(
        self,
        after_seq: int,
        since_ts: int | None,
        types: Collection[str] | None,
        resource_ids: Collection[str] | None,
        limit: int,
    ) -> tuple[int, list[RawEvent]]:
        """(high-water mark, matching rows). The mark is read first, so every event up to it
        was visible to the query: a caller may skip to it when nothing matched."""
        latest = self.store.last_event_seq()
        rows = self.store.event_rows(
            after_seq=after_seq,
            since_ts=since_ts,
            types=types,
            resource_ids=resource_ids,
            limit=limit,
        )
        return latest, rows

    def _events(self) -> SeqNotifier:
        if self._events_notifier is None:
            self._events_notifier = SeqNotifier(self.store.last_event_seq())
        return self._events_notifier

    async def store_stats(self) -> dict[str, int | float]:
        """This actor's state-store counters (:meth:`rayinfra.store.StateStore.stats`)."""
        return self.store.stats()

    async def refresh_metrics(self) -> None:
        """Bring gauges up to date before the metrics are read (an actor with gauges to sample
        overrides it)."""

    async def metrics_snapshot(self) -> dict[str, float]:
        await self.refresh_metrics()
        return self.metrics.snapshot() if self.metrics is not None else {}

    async def metrics_text(self) -> bytes:
        await self.refresh_metrics()
        return self.metrics.text() if self.metrics is not None else b""

    async def publish_metrics(self) -> None:
        """Into Ray's metrics too (the dashboard and Ray's Prometheus endpoint show them)."""
        if self._ray_metrics is None:
            self._ray_metrics = raywrap.RayMetricsMirror()
        self._ray_metrics.publish(await self.metrics_snapshot())

    def publishing_metrics(self) -> Coroutine[Any, Any, None]:
        """The loop that runs :meth:`publish_metrics` every ``METRICS_PUBLISH_S``."""
        return self.every(METRICS_PUBLISH_S, self.publish_metrics, f"{self.NAME} metrics")

    async def every(self, period_s: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run ``step`` every ``period_s``; a failure is logged, never the end of the loop."""
        while True:
            await asyncio.sleep(period_s)
            try:
                await step()
            except Exception:
                log.exception("%s failed", what)

    async def shutdown(self) -> bool:
        """Flush and close the state store before the actor is killed for good."""
        self.store.close()
        return True


def _event_dict(e: EventRecord) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "event_type": e.event_type,
        "resource_id": e.resource_id,
        "data": e.data,
        "timestamp": e.timestamp,
    }


def _change_dict(c: ChangeRecord) -> dict[str, Any]:
    return {"seq": c.seq, "key": c.key, "kind": c.kind, "data": c.data, "ts": c.ts}

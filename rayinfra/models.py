"""Shapes every surface renders from: one task status, drawn by the CLI, gRPC, HTTP and Python.

The scheduler answers with plain dicts (:meth:`rayinfra.taskstore.TaskRow.status_dict`, or the
``data`` of a change on its feed); :class:`TaskStatus` reads either, and each surface renders
from it: :meth:`TaskStatus.client_dict` is the Python client's pinned dict, the gateway builds
its protobuf messages and JSON bodies from the same fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from rayinfra.errors import InvalidArgumentError
from rayinfra.json_encode import compact_encoder, loads_stored
from rayinfra.scheduling.tasks import TERMINAL_STATES, encode_wire_result

#: what ``stream_task_results`` yields (the original client's keys)
STREAM_KEYS = ("task_id", "status", "result", "error", "duration_ms", "completed_at")
#: what an event of ``stream_events`` carries (``seq``: its place in the durable event log)
EVENT_KEYS = ("event_type", "resource_id", "data", "timestamp", "seq")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskStatus:
    """One task's state. ``result`` is the handler's native JSON (``None`` until it finished).

    A frozen dataclass, not a pydantic model: every field is built by the constructors below
    from data the runtime wrote, so there is nothing to validate, and pydantic's import and
    model build (~110 ms) would be a third of a CLI command's budget (docs/benchmarks.md).
    """

    task_id: str
    status: str
    result: Any = None
    error: str = ""
    attempts: int = 0
    task_class: str = ""
    priority: int = 0
    workflow_id: str = ""
    timeout_s: float | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_scheduler(cls, d: Mapping[str, Any]) -> TaskStatus:
        """From a scheduler status dict, or the ``data`` of a ``state`` change (with its key)."""
        return cls(
            task_id=d["task_id"],
            status=d["status"],
            result=d.get("result"),
            error=d.get("error") or "",
            attempts=int(d.get("attempts") or 0),
            task_class=d.get("task_class") or "",
            priority=int(d.get("priority") or 0),
            workflow_id=d.get("workflow_id") or "",
            timeout_s=d.get("timeout_s"),
            submitted_at=float(d.get("submitted_at") or 0.0),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
        )

    @classmethod
    def from_status_row(cls, r: Sequence[Any]) -> TaskStatus:
        """From a :data:`rayinfra.taskstore.StatusRow` (the ``result`` JSON text decoded)."""
        (tid, task_class, prio, wf, timeout_s, status, attempts, result, error, sub, started,
         finished) = r  # fmt: skip
        return cls(
            tid,
            status,
            None if result is None else loads_stored(result),
            error or "",
            int(attempts or 0),
            task_class or "",
            int(prio or 0),
            wf or "",
            timeout_s,
            float(sub or 0.0),
            started,
            finished,
        )

    @classmethod
    def from_event_data(cls, task_id: str, status: str, d: Mapping[str, Any]) -> TaskStatus:
        """From the decoded ``data`` of a task event (``status``: the event's own, used when
        the data has none): what :meth:`from_change` gives, without the change's dicts (the
        client's feed builds one per finished task it waits for)."""
        return cls(
            task_id,
            d.get("status", status),
            d.get("result"),
            d.get("error") or "",
            int(d.get("attempts") or 0),
            d.get("task_class") or "",
            int(d.get("priority") or 0),
            d.get("workflow_id") or "",
            d.get("timeout_s"),
            float(d.get("submitted_at") or 0.0),
            d.get("started_at"),
            d.get("finished_at"),
        )

    @classmethod
    def from_change(cls, change: Mapping[str, Any]) -> TaskStatus:
        """From a ``state`` change of the scheduler's feed (``{key, data: {status, ...}}``)."""
        return cls.from_scheduler({**change["data"], "task_id": change["key"]})

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def duration_ms(self) -> float:
        """Run time of a finished task (0 until it finished)."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at) * 1000.0
        return 0.0

    def elapsed_ms(self, now: float | None = None) -> float:
        """Run time so far: a running task's age, a finished task's duration."""
        if not self.started_at:
            return 0.0
        return ((self.finished_at or now or time.time()) - self.started_at) * 1000.0

    @property
    def completed_at(self) -> int:
        return int(self.finished_at) if self.finished_at else 0

    @property
    def wire_result(self) -> dict[str, str]:
        """The result as the wire's ``map<string,string>`` (strings pass, others JSON)."""
        return encode_wire_result(self.result) if self.result is not None else {}

    def client_dict(self) -> dict[str, Any]:
        """The Python client's dict: ``result`` the wire map, ``result_payload`` native JSON."""
        return {
            "task_id": self.task_id,
            "status": self.status,
            "result": self.wire_result,
            "result_payload": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "duration_ms": self.duration_ms,
            "completed_at": self.completed_at,
        }

    def to_pb(self, message_type: Any, now: float | None = None) -> Any:
        """As ``orchestrator.v1.TaskResult`` or ``GetTaskStatusResponse`` (each takes the
        fields it has; a stream's ``duration_ms`` is a running task's age)."""
        values = {
            "task_id": self.task_id,
            "status": self.status,
            "result": self.wire_result,
            "error": self.error,
            "result_json": _json(self.result) if self.result is not None else "",
            "attempts": self.attempts,
            "duration_ms": self.elapsed_ms(now),
            "completed_at": self.completed_at,
            "task_class": self.task_class,
            "priority": self.priority,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at or 0.0,
            "finished_at": self.finished_at or 0.0,
            "workflow_id": self.workflow_id,
            "timeout_seconds": self.timeout_s or 0.0,
        }
        fields = message_type.DESCRIPTOR.fields_by_name
        return message_type(**{k: v for k, v in values.items() if k in fields})

    @classmethod
    def from_pb(cls, m: Any) -> TaskStatus:
        """From ``TaskResult`` / ``GetTaskStatusResponse`` (the inverse of :meth:`to_pb`)."""
        has = m.DESCRIPTOR.fields_by_name
        return cls(
            task_id=m.task_id,
            status=m.status,
            result=json.loads(m.result_json) if m.result_json else None,
            error=m.error,
            attempts=m.attempts,
            task_class=m.task_class if "task_class" in has else "",
            priority=m.priority if "priority" in has else 0,
            workflow_id=m.workflow_id if "workflow_id" in has else "",
            timeout_s=(m.timeout_seconds or None) if "timeout_seconds" in has else None,
            submitted_at=m.submitted_at if "submitted_at" in has else 0.0,
            started_at=m.started_at or None,
            finished_at=m.finished_at or None,
        )

    def json_dict(self) -> dict[str, Any]:
        """Every field plus the derived ones, JSON-ready (HTTP ``GET /tasks/{id}``, the CLI)."""
        return {**dataclasses.asdict(self), "duration_ms": self.duration_ms}


class StatusRows(Mapping[str, "TaskStatus | None"]):
    """Status rows by id (``None``: an unknown id), each decoded into a :class:`TaskStatus`
    when it is read: a wait for 40,000 finished tasks turns each into its result and drops it,
    instead of holding 40,000 statuses at once (the collector's passes over them cost the
    client as much as decoding them). The scheduler answers a status read with one, and Ray
    pickles it in one piece (a plain dict of row tuples costs ~5x as much to send and read:
    :mod:`rayinfra.raywrap`, "What crosses an actor boundary")."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Mapping[str, Sequence[Any] | None]) -> None:
        self._rows = rows

    def __getitem__(self, task_id: str) -> TaskStatus | None:
        r = self._rows[task_id]
        return None if r is None else TaskStatus.from_status_row(r)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class Progress:
    """Which states of each task were already delivered: a task's states only move forward
    (pending, running, then one final state), so an older or repeated one is dropped. The one
    de-duplication rule of every task stream (the client's, the gateway's)."""

    _RANK: ClassVar[dict[str, int]] = {"pending": 0, "running": 1}  # final states rank 2

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def advance(self, st: TaskStatus) -> bool:
        """Whether ``st`` is news (and record it)."""
        rank = self._RANK.get(st.status, 2)
        last = self._last.get(st.task_id, -1)
        if rank < last or rank == last == 2:
            return False
        self._last[st.task_id] = rank
        return True

    def news(self, st: TaskStatus) -> list[TaskStatus]:
        """The states a stream delivers for a change from the feed, in order: ``st`` if it is
        news, preceded by its ``running`` state when it ended having started and no
        ``running`` went out for it (a task that ends within ``STARTED_AFTER_S`` of its
        dispatch has no ``task_started`` event; its final one carries ``started_at``)."""
        out = []
        if st.status in TERMINAL_STATES and st.started_at and self._last.get(st.task_id, -1) < 1:
            running = dataclasses.replace(
                st, status="running", result=None, error="", finished_at=None
            )
            if self.advance(running):
                out.append(running)
        if self.advance(st):
            out.append(st)
        return out


class WatchedStates:
    """The latest state of each task a stream watches, to re-send on a cadence (StreamTaskResults
    re-sends them as the original did, so a reader with a per-message deadline keeps its stream).

    With ``task_ids``: those tasks, a finished one included only with ``include_finished``.
    Without (a stream of every task): the unfinished tasks the stream delivered, at most
    ``limit`` (the most recently changed); a finished one is dropped once it was delivered.
    """

    def __init__(
        self, task_ids: Collection[str], include_finished: bool, limit: int = 1000
    ) -> None:
        self._ids = frozenset(task_ids)
        self._include_finished = include_finished
        self._limit = limit
        self._latest: OrderedDict[str, TaskStatus] = OrderedDict()

    def saw(self, st: TaskStatus) -> None:
        """``st`` was delivered: it is the state to re-send from now on (or none)."""
        if self._ids and st.task_id not in self._ids:
            return
        if st.terminal and not (self._ids and self._include_finished):
            self._latest.pop(st.task_id, None)
            return
        self._latest[st.task_id] = st
        self._latest.move_to_end(st.task_id)
        if not self._ids:
            while len(self._latest) > self._limit:
                self._latest.popitem(last=False)

    def states(self) -> list[TaskStatus]:
        return list(self._latest.values())

    def __len__(self) -> int:
        return len(self._latest)


#: a feed cursor "from the future": the feed answers at once with its latest seq ("from now on")
FROM_NOW = 2**62

#: the most task ids a feed poll sends for the scheduler to match; a larger set is matched where
#: the answer arrives, before anything is decoded (sending and matching it on every poll costs
#: more than the events it filters out)
FEED_IDS_SENT_MAX = 256


def feed_filter(
    task_ids: Collection[str] | None,
) -> tuple[list[str] | None, Collection[str] | None]:
    """How a client's feed poll asks for ``task_ids``: ``(task_ids to send, keep)``, the
    arguments of a transport's ``changes``. A live collection (a dict's keys) kept is read when
    the answer arrives, so what it no longer holds by then is not decoded."""
    if task_ids is None:
        return None, None
    if len(task_ids) <= FEED_IDS_SENT_MAX:
        return list(task_ids), None
    return None, task_ids


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a task listing, newest first; ``next`` is the cursor of the page after it
    (pass it back as ``after``), ``None`` on the last page."""

    tasks: list[TaskStatus]
    next: str | None = None


def encode_list_cursor(submitted_at: float, position: int) -> str:
    """The cursor of a listing's position: after the task submitted at ``submitted_at`` with
    store position ``position`` (the task row's rowid). Opaque to callers; it stays valid while
    other tasks come and go (a keyset, not an offset)."""
    return f"{submitted_at!r}:{position:d}"


def decode_list_cursor(cursor: str) -> tuple[float, int]:
    """``(submitted_at, position)`` of a cursor; ``InvalidArgumentError`` (field ``after``) if
    ``cursor`` is not one."""
    stamp, _, position = cursor.partition(":")
    try:
        out = float(stamp), int(position)
    except ValueError:
        out = math.nan, 0
    if not math.isfinite(out[0]) or not position.isascii() or not position.isdigit():
        raise InvalidArgumentError(
            "after", f"{cursor[:80]!r} is not a cursor (the `next` of a previous page)"
        )
    return out


_json = compact_encoder()  # as the store writes results

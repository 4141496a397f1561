"""Admitting tasks: the one way a batch enters the runtime (:class:`Submitter`).

Validate the batch (classes, limits, trust, what each class allows; a payload without a type
routed to a handler), commit it (task rows + ``task_submitted`` events in one transaction), then
wake the scheduler; only then is it acknowledged. Its three entry points
share it: the ``scheduler`` actor (the Python client over actor handles, the file queue), the
gateway's gRPC servers and its HTTP API. The gateway's submitter wakes the scheduler with the
doorbell (:mod:`rayinfra.doorbell`), so a remote submit is acknowledged after one local SQLite
transaction instead of an actor round trip, and keeps being accepted while the scheduler
restarts; the scheduler's own submitter queues the rows directly. A batch is all or nothing: any invalid
spec rejects it before anything is written. Ids make a repeat idempotent: the same id with the
same spec is acknowledged again (``duplicate``), with a different spec it is a conflict.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from rayinfra import taskstore
from rayinfra.compat import Route, route_untyped
from rayinfra.config import CLASS_ALIASES, RayinfraConfig
from rayinfra.errors import (
    BackendUnavailableError,
    ClassPolicyError,
    InvalidArgumentError,
    TaskConflictError,
)
from rayinfra.scheduling.tasks import TaskSpec, validate_spec
from rayinfra.store import StateStore
from rayinfra.taskstore import TaskRow

SLURM_CLASS = "gpu_slurm"
SHELL_TYPE = "shell"  # the payload type a class runs only with ``allow_shell``
INLINE_SUBMIT_MAX = 16  # tasks per submit committed on the caller's thread when the writer idles


class BackendGate(Protocol):
    """Admits the tasks of a class that runs outside Ray (``gpu_slurm``:
    :class:`rayinfra.actors.slurm_pool.SlurmGate`)."""

    async def check(self, specs: Sequence[TaskSpec], *, trusted: bool) -> None:
        """Raise (InvalidArgumentError naming the field, BackendUnavailableError) to refuse
        the batch before anything is written."""
        ...


@dataclass(frozen=True)
class Admitted:
    """A committed batch: ``specs`` in request order, ``rows`` distinct, ``new_ids`` first seen."""

    specs: list[TaskSpec]
    rows: list[TaskRow]
    new_ids: frozenset[str]
    seq: int  # last event seq the commit wrote (0 when every task was a repeat)

    def replies(self) -> list[dict[str, Any]]:
        return [
            {
                "success": True,
                "task_id": s.task_id,
                "error": "",
                "duplicate": s.task_id not in self.new_ids,
            }
            for s in self.specs
        ]

    @property
    def fresh_rows(self) -> list[TaskRow]:
        return [r for r in self.rows if r.task_id in self.new_ids]


def _new_id() -> str:
    return uuid.uuid4().hex


def validate_batch(
    raw_specs: Sequence[Mapping[str, Any]],
    config: RayinfraConfig,
    *,
    trusted: bool,
    slurm: bool = False,
) -> list[TaskSpec]:
    """Validate every spec (errors name ``tasks[i].<field>`` in a batch of more than one);
    ``gpu_slurm`` tasks only with ``slurm`` (a :class:`BackendGate` checks them next)."""
    out: list[TaskSpec] = []
    by_id: dict[str, TaskSpec] = {}
    classes = frozenset(config.classes)
    default_class = config.scheduler.default_class
    limit = config.scheduler.payload_limit_bytes
    for i, raw in enumerate(raw_specs):
        route: Route | None = None
        try:
            raw, route = route_payload(raw, config)
            spec = validate_spec(
                raw,
                classes=classes,
                aliases=CLASS_ALIASES,
                default_class=default_class,
                payload_limit_bytes=limit,
                new_id=_new_id,
                trusted=trusted,
            )
            check_class_policy(spec.task_class, spec.payload, config)
        except InvalidArgumentError as e:
            if route is not None:
                e = route.blame(e)  # a refused routed type: name the key that chose it
            field_name = e.field if len(raw_specs) == 1 else f"tasks[{i}].{e.field}"
            raise type(e)(field_name, e.message) from None  # keeps NotTrustedError
        if spec.task_class == SLURM_CLASS and not slurm:
            raise BackendUnavailableError(
                "task_class gpu_slurm needs the Slurm backend, which this process does not "
                "admit to; nothing was queued"
            )
        prev = by_id.get(spec.task_id)
        if prev is not None and prev.identity() != spec.identity():
            raise TaskConflictError(
                "task_id", f"{spec.task_id!r} appears twice with different specs"
            )
        by_id[spec.task_id] = spec
        out.append(spec)
    return out


def check_class_policy(
    task_class: str,
    payload: Mapping[str, Any],
    config: RayinfraConfig,
    *,
    field: str = "payload.type",
) -> None:
    """Refuse what a task's class does not allow, whoever submits it: a ``shell`` payload in a
    class without ``allow_shell`` (:class:`ClassPolicyError` naming ``field``). The type is
    compared as loosely as the trust check compares it (``" Shell"`` is ``shell``)."""
    ptype = payload.get("type")
    if not isinstance(ptype, str) or ptype.strip().lower() != SHELL_TYPE:
        return
    name = CLASS_ALIASES.get(task_class, task_class)
    if config.class_config(name).allow_shell:
        return
    raise ClassPolicyError(
        field,
        f"{SHELL_TYPE!r} tasks are not allowed in class {name!r}: its config says "
        f"allow_shell = false; set [classes.{name}] allow_shell = true, or submit to a class "
        "that allows shell tasks (nothing was queued)",
    )


def route_payload(
    raw: Mapping[str, Any], config: RayinfraConfig
) -> tuple[Mapping[str, Any], Route | None]:
    """``raw`` with a handler for a payload without ``type``, chosen by its fields and class
    (:func:`rayinfra.compat.route_untyped`, ``[tasks]``), and why; ``raw`` itself when it has
    a type, is not an object (validation says so next) or is a ``gpu_slurm`` job's."""
    payload = raw.get("payload") if isinstance(raw, Mapping) else None
    if payload is None:
        payload = {}
    if not isinstance(payload, dict) or "type" in payload or not config.tasks.route_untyped:
        return raw, None
    task_class = raw.get("task_class") or config.scheduler.default_class
    if not isinstance(task_class, str):
        return raw, None
    task_class = CLASS_ALIASES.get(task_class, task_class)
    if task_class == SLURM_CLASS:  # its payload is the job's (argv, template values)
        return raw, None
    from rayinfra.handlers.registry import known_task_types

    routed = route_untyped(payload, task_class, config.tasks, known_task_types(config.handlers))
    if routed is None:
        return raw, None
    return {**raw, "payload": routed[0]}, routed[1]


def new_rows(specs: Sequence[TaskSpec], *, trusted: bool, source: str, now: float) -> list[TaskRow]:
    """One pending row per distinct id (the first spec of a repeated id wins; they are equal)."""
    rows: dict[str, TaskRow] = {}
    for s in specs:
        if s.task_id not in rows:
            rows[s.task_id] = TaskRow(
                spec=s,
                identity=s.identity(),
                trusted=trusted,
                status="pending",
                submitted_at=now,
                source=source,
            )
    return list(rows.values())


async def admit(
    store: StateStore,
    config: RayinfraConfig,
    raw_specs: Sequence[Mapping[str, Any]],
    *,
    trusted: bool,
    source: str,
    slurm: BackendGate | None = None,
) -> Admitted:
    """Validate and commit a batch; returns once the transaction is durable.

    A small batch commits on the calling thread when the store's writer is idle (two thread hops
    cost more than the commit); a big one goes through the writer's group commit, so the event
    loop never blocks on it.
    """
    specs = validate_batch(raw_specs, config, trusted=trusted, slurm=slurm is not None)
    if slurm is not None:
        await slurm.check(specs, trusted=trusted)
    now = time.time()
    rows = new_rows(specs, trusted=trusted, source=source, now=now)
    fresh, seq = await store.awrite(
        partial(taskstore.insert_new, rows=rows, now=now), inline=len(rows) <= INLINE_SUBMIT_MAX
    )
    return Admitted(specs=specs, rows=rows, new_ids=frozenset(fresh), seq=seq)


class Submitter:
    """Validate, commit, wake: ``await submitter.submit(specs, trusted=..., source=...)``.

    ``wake`` is told about every batch that committed at least one new task (the scheduler
    queues its rows; the gateway rings the doorbell).
    """

    def __init__(
        self,
        store: StateStore,
        config: RayinfraConfig,
        wake: Callable[[Admitted], None],
        slurm: BackendGate | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._wake = wake
        self.slurm = slurm

    async def submit(
        self, raw_specs: Sequence[Mapping[str, Any]], *, trusted: bool, source: str
    ) -> Admitted:
        """Admit a batch (all or nothing); returns once it is durable and the scheduler woken.

        Raises :class:`InvalidArgumentError` (field named, ``tasks[i].`` prefixed in a batch),
        :class:`TaskConflictError` or :class:`BackendUnavailableError`; nothing is written then.
        """
        admitted = await admit(
            self.store, self.config, raw_specs, trusted=trusted, source=source, slurm=self.slurm
        )
        if admitted.new_ids:
            self._wake(admitted)
        return admitted

"""The client's primitives over Ray actor handles (this process is a driver of the runtime's
Ray cluster, or runs inside it). Every call retries across a scheduler restart for up to
``retry_for_s`` (``DSPY_AGENT_SERVICE_TIMEOUT``): submits are idempotent by task id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from rayinfra import raywrap
from rayinfra.control import ControlPlane
from rayinfra.models import FROM_NOW, TaskStatus

EVENT_POLL_S = 20.0
EVENT_BATCH = 1000


class ActorTransport:
    kind = "actors"

    def __init__(self, *, retry_for_s: float = 60.0, backoff_s: float = 2.0) -> None:
        self.control = ControlPlane(
            raywrap.ActorCaller(retry_for_s=retry_for_s, backoff_s=backoff_s)
        )

    async def open(self) -> None:
        await self.control.call("scheduler", "ping")

    async def close(self) -> None:
        return None

    async def submit(self, specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return await self.control.submit(specs, trusted=True, source="client")

    async def get(self, task_ids: Sequence[str]) -> dict[str, TaskStatus | None]:
        return await self.control.get(task_ids)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(await self.control.call("scheduler", "cancel", task_id))

    async def list_tasks(
        self, status: str | None, task_class: str | None, limit: int
    ) -> list[TaskStatus]:
        return await self.control.list_tasks(status, task_class, limit)

    async def purge(self, older_than_s: float | None) -> dict[str, int]:
        return dict(await self.control.call("scheduler", "purge", older_than_s))

    async def changes(
        self,
        after_seq: int,
        task_ids: Sequence[str] | None,
        timeout_s: float,
        terminal_only: bool,
    ) -> tuple[int, list[TaskStatus]]:
        return await self.control.changes(after_seq, task_ids, timeout_s, terminal_only)

    async def events(
        self, event_types: Sequence[str] | None, since_timestamp: int
    ) -> AsyncIterator[dict[str, Any]]:
        types = list(event_types) if event_types else None
        seq, events = await self.control.call(  # since 0: from now on, as over gRPC
            "scheduler", "events", 0 if since_timestamp else FROM_NOW, since_timestamp or None,
            types, EVENT_BATCH,
        )  # fmt: skip
        while True:
            for e in events:
                yield {k: e[k] for k in ("event_type", "resource_id", "data", "timestamp")}
            seq, events = await self.control.call(
                "scheduler", "events", seq, None, types, EVENT_BATCH, EVENT_POLL_S
            )

    async def metrics(self) -> dict[str, float]:
        return await self.control.metrics()

    async def health(self) -> dict[str, Any]:
        return await self.control.health_dict()

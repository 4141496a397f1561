"""What the gateway's gRPC and HTTP servers call: the control actors, with errors made typed.

The gateway only translates (no state of its own). Every call goes to an actor handle; an
actor that is missing or dying becomes :class:`~rayinfra.errors.Unavailable`, and the error an
actor raised comes back as itself (``InvalidArgument``, ``TaskConflict``, ...), so each server
maps one set of exceptions to its status codes.

Submits are the exception to "every call goes to an actor": given the state store, the backend
admits a batch itself (:func:`rayinfra.admission.admit`: validate, commit) and acknowledges it
once committed, after ringing the scheduler's doorbell (:mod:`rayinfra.doorbell`; without one,
an ``adopt`` actor call it does not wait for). The ack costs one local SQLite transaction
instead of an actor round trip, and submits keep being accepted while the scheduler restarts
(it queues every committed task when it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from rayinfra import __version__, admission, doorbell
from rayinfra.config import RayinfraConfig
from rayinfra.errors import Unavailable
from rayinfra.store import StateStore

log = logging.getLogger(__name__)

CONTROL_ACTORS = ("scheduler", "service_registry", "health_checker", "gateway")
HEALTH_PING_TIMEOUT_S = 2.0


class Backend:
    """Async access to the control actors by name (handles cached, re-resolved on failure)."""

    def __init__(
        self,
        get_actor: Callable[[str], Any | None],
        remote_errors: tuple[type[BaseException], ...],
        unwrap: Callable[[BaseException], BaseException],
        *,
        store: StateStore | None = None,
        config: RayinfraConfig | None = None,
    ) -> None:
        self._get_actor = get_actor
        self._remote_errors = remote_errors
        self._unwrap = unwrap
        self._handles: dict[str, Any] = {}
        self._store = store
        self._config = config
        self._announce_ids: list[str] = []  # committed here, not yet told to the scheduler
        self._announce_seq = 0
        self._announcer: asyncio.Task[None] | None = None
        self._ring_scheduled = False
        self._bell = (
            doorbell.Bell(doorbell.address(config.state.db_path, "scheduler"))
            if store is not None and config is not None
            else None
        )

    def handle(self, actor: str) -> Any:
        h = self._handles.get(actor)
        if h is None:
            h = self._get_actor(actor)
            if h is None:
                raise Unavailable(f"the {actor} actor is not running")
            self._handles[actor] = h
        return h

    async def call(
        self, actor: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        try:
            h = self._handles.get(actor) or await asyncio.to_thread(self.handle, actor)
            ref = getattr(h, method).remote(*args)
            if timeout_s is None:
                return await ref
            return await asyncio.wait_for(ref, timeout_s)
        except self._remote_errors as e:
            self._handles.pop(actor, None)
            raise Unavailable(f"the {actor} actor is unavailable ({type(e).__name__})") from None
        except asyncio.TimeoutError:
            raise Unavailable(f"the {actor} actor did not answer within {timeout_s:g}s") from None
        except Exception as e:  # noqa: BLE001 - re-raised as what the actor raised
            raise self._unwrap(e) from None

    # ------------------------------------------------------------------ tasks
    async def submit(
        self, specs: Sequence[dict[str, Any]], trusted: bool, source: str
    ) -> list[dict[str, Any]]:
        """Admit a batch (all or nothing); replies once it is durable."""
        if self._store is None or self._config is None:
            replies: list[dict[str, Any]] = await self.call(
                "scheduler", "submit", list(specs), trusted, source
            )
            return replies
        admitted = await admission.admit(
            self._store, self._config, specs, trusted=trusted, source=source
        )
        if admitted.new_ids:
            self._announce_ids.extend(admitted.new_ids)
            self._announce_seq = max(self._announce_seq, admitted.seq)
            if not self._ring_scheduled:  # once per loop pass, after the replies are sent
                self._ring_scheduled = True
                asyncio.get_running_loop().call_soon(self._ring)
        return admitted.replies()

    def _ring(self) -> None:
        """Tell the scheduler about every task committed since the last ring: its doorbell, or
        without one (or nobody bound to it right now) an ``adopt`` call."""
        self._ring_scheduled = False
        if not self._announce_ids:
            return
        if self._bell is not None and self._bell.ring():
            self._announce_ids, self._announce_seq = [], 0
        elif self._announcer is None:  # else the one in flight sends these when it returns
            self._announcer = asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        """Tell the scheduler which committed tasks to queue: one ``adopt`` call in flight at a
        time, carrying every id committed since the previous one (so a burst of submits costs a
        few actor calls, not one each)."""
        try:
            while self._announce_ids:
                ids, seq = self._announce_ids, self._announce_seq
                self._announce_ids, self._announce_seq = [], 0
                try:
                    await self.call("scheduler", "adopt", ids, seq)
                except Exception as e:  # noqa: BLE001 - committed: the scheduler's sweep queues them
                    log.info(
                        "scheduler not told of %d new task(s) (%s); its sweep queues them",
                        len(ids),
                        e,
                    )
        finally:
            self._announcer = None

    async def get(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        result: dict[str, dict[str, Any] | None] = await self.call(
            "scheduler", "get", list(task_ids)
        )
        return result

    async def metrics(self) -> dict[str, float]:
        """Every actor's metrics in one map (the scheduler's are required, others best effort)."""
        out: dict[str, float] = dict(await self.call("scheduler", "metrics_snapshot"))
        with contextlib.suppress(Unavailable):
            out.update(await self.call("service_registry", "metrics_snapshot", timeout_s=5.0))
        return out

    # ------------------------------------------------------------------ health
    async def health(self, required_services: Sequence[str] = ()) -> tuple[bool, dict[str, str]]:
        """(every control actor alive and every required selected service healthy, statuses)."""
        services: dict[str, str] = {}

        async def ping(name: str) -> None:
            try:
                await self.call(name, "ping", timeout_s=HEALTH_PING_TIMEOUT_S)
                services[name] = "healthy"
            except Unavailable as e:
                services[name] = f"unavailable: {e}"

        await asyncio.gather(*(ping(n) for n in CONTROL_ACTORS))
        healthy = all(v == "healthy" for v in services.values())
        if services.get("service_registry") == "healthy":
            try:
                st = await self.call("service_registry", "status", [], timeout_s=5.0)
            except Exception as e:  # noqa: BLE001 - reported in the map
                services["service_registry"] = f"error: {e}"
                healthy = False
            else:
                for name, row in st.items():
                    if not row.get("desired") and name not in required_services:
                        continue
                    services[name] = row["status"]
                    if row.get("required") and row["status"] != "running":
                        healthy = False
        return healthy, services

    @staticmethod
    def version() -> str:
        return __version__

    @staticmethod
    def now() -> int:
        return int(time.time())

"""The original's file queue, made real: ``ENV_QUEUE_DIR/{pending,done,failed}``.

A JSON envelope ``{id?, class?, payload?, priority?, timeout_seconds?, workflow_id?}`` dropped into
``pending/<name>.json`` is claimed by renaming it to ``pending/<name>.json.lock`` (an atomic,
exclusive claim, as the original did), submitted as a task, and when the task ends moved to
``done/<id>.json`` (with the result) or ``failed/<id>.json`` (with the error). A file that does
not parse goes straight to ``failed/`` with the parse error. :meth:`FileQueue.poll` is the
scheduler's whole part of it. Filesystem and state store only; no Ray import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Container, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayinfra import taskstore
from rayinfra.errors import BackendUnavailableError, InvalidArgumentError
from rayinfra.scheduling.tasks import TERMINAL_STATES, TaskSpec

if TYPE_CHECKING:
    from rayinfra.admission import Submitter
    from rayinfra.store import StateStore

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


class FileQueue:
    """Claims envelopes from ``pending/`` and files finished tasks into ``done/`` / ``failed/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pending = root / "pending"
        self.done = root / "done"
        self.failed = root / "failed"
        for d in (self.pending, self.done, self.failed):
            d.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, Path] = {}  # task id -> lock file
        self.pending_files = 0  # ``queue_depth`` as of the last poll

    async def poll(self, submitter: Submitter, store: StateStore, active: Container[str]) -> None:
        """Submit what was dropped into ``pending/`` (a refused envelope is filed in
        ``failed/``), file claimed tasks that ended while nobody watched (before a restart;
        ``active``: the ones still running here), and count what is pending. File I/O runs
        off the event loop."""
        for envelope in await asyncio.to_thread(self.claim):
            try:
                await submitter.submit([envelope], trusted=True, source="file")
            except (InvalidArgumentError, BackendUnavailableError) as e:
                await asyncio.to_thread(self.reject, envelope["task_id"], str(e))
        stale = [t for t in await asyncio.to_thread(self.locked_ids) if t not in active]
        if stale:
            rows = (await store.aread(partial(taskstore.get_tasks, ids=stale))).values()
            ended = [r for r in rows if r.status in TERMINAL_STATES]
            await asyncio.to_thread(self.finished, ended)
        self.pending_files = await asyncio.to_thread(self.pending_count)

    def finished(self, rows: Iterable[taskstore.TaskRow]) -> None:
        """File each of these finished tasks (see :meth:`finish`)."""
        for row in rows:
            self.finish(row.task_id, row.status_dict(), row.spec)

    def pending_count(self) -> int:
        """``queue_depth``: unclaimed ``*.json`` files in ``pending/``."""
        try:
            return sum(1 for p in self.pending.iterdir() if p.name.endswith(".json"))
        except OSError:
            return 0

    def claim(self) -> list[dict[str, Any]]:
        """Claim every unclaimed file; return client-style specs (``task_id`` etc.) to submit."""
        out = []
        for path in sorted(self.pending.glob("*.json")):
            lock = path.with_name(path.name + LOCK_SUFFIX)
            try:
                path.rename(lock)
            except FileNotFoundError:
                continue  # another claimer won
            try:
                spec = envelope_to_spec(lock.read_bytes(), path.stem)
            except ValueError as e:
                self._write(self.failed / path.name, {"file": path.name, "error": str(e)})
                lock.unlink(missing_ok=True)
                continue
            self._locks[spec["task_id"]] = lock
            out.append(spec)
        return out

    def locked_ids(self) -> dict[str, Path]:
        """Claimed files (including ones claimed before a restart), by task id."""
        found: dict[str, Path] = {}
        for lock in self.pending.glob("*.json" + LOCK_SUFFIX):
            stem = lock.name[: -len(".json" + LOCK_SUFFIX)]
            try:
                found[envelope_to_spec(lock.read_bytes(), stem)["task_id"]] = lock
            except (ValueError, OSError):
                continue
        self._locks.update(found)
        return found

    def finish(self, task_id: str, status: dict[str, Any], spec: TaskSpec) -> None:
        """File a finished task: ``done/<id>.json`` if completed, else ``failed/<id>.json``."""
        lock = self._locks.pop(task_id, None) or self.locked_ids().get(task_id)
        record = {
            "id": task_id,
            "class": spec.task_class,
            "payload": spec.payload,
            "status": status["status"],
            "result": status.get("result"),
            "error": status.get("error", ""),
            "attempts": status.get("attempts"),
            "duration_ms": status.get("duration_ms"),
            "completed_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.get("finished_at") or time.time())
            ),
        }
        target = (self.done if status["status"] == "completed" else self.failed) / f"{task_id}.json"
        self._write(target, record)
        if lock is not None:
            lock.unlink(missing_ok=True)

    def reject(self, task_id: str, error: str) -> None:
        """A claimed file whose task was refused at submit (e.g. an invalid class)."""
        lock = self._locks.pop(task_id, None)
        body: dict[str, Any] = {"id": task_id, "error": error}
        if lock is not None:
            with contextlib.suppress(OSError, ValueError):
                body["envelope"] = json.loads(lock.read_bytes())
            lock.unlink(missing_ok=True)
        self._write(self.failed / f"{task_id}.json", body)

    @staticmethod
    def _write(target: Path, record: dict[str, Any]) -> None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(target)


def envelope_to_spec(data: bytes, stem: str) -> dict[str, Any]:
    """Parse an envelope into the client's spec keys; ValueError says what is wrong."""
    try:
        env = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"invalid JSON: {e}") from None
    if not isinstance(env, dict):
        raise ValueError("the envelope must be a JSON object")
    task_id = env.get("id") or stem
    if not isinstance(task_id, str):
        raise ValueError("id must be a string")
    payload = env.get("payload", {})
    if not isinstance(payload, dict):
        raise ValueError("payload must be a JSON object")
    spec: dict[str, Any] = {"task_id": task_id, "payload": payload}
    if env.get("class"):
        spec["task_class"] = env["class"]
    for src, dst in (
        ("priority", "priority"),
        ("workflow_id", "workflow_id"),
        ("timeout_seconds", "timeout_s"),
    ):
        if env.get(src) is not None:
            spec[dst] = env[src]
    return spec

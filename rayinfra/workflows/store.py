"""Where workflows live: definitions as the original's files, runs in the state store.

Definitions (:class:`DefinitionStore`): ``<dir>/<id>.json``, written through a temp file and a
rename; saving over an existing one archives it first as
``<dir>/<id>/history/<new updated_at>.json``: the original's ``WORKFLOW_STORE_DIR`` layout, so its
files keep working (and files written here are the original's). Runs (:class:`RunStore`): the
state store's kv, namespace ``workflow_runs`` (run id -> record) and ``workflow_run_keys``
(``<workflow id>::<idempotency key>`` -> run id).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rayinfra.errors import WorkflowNotFoundError
from rayinfra.json_encode import loads_stored
from rayinfra.store import StateStore
from rayinfra.workflows.runs import RUN_TERMINAL, Run
from rayinfra.workflows.spec import VALID_ID, Workflow, parse_workflow

__all__ = ["DefinitionStore", "RunStore", "delete_finished_runs"]

RUNS = "workflow_runs"
RUN_KEYS = "workflow_run_keys"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _safe_name(value: str) -> str:
    return value.replace(":", "-").replace("/", "-")


class DefinitionStore:
    """Workflow definitions in a directory (the original's FileStore layout)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _path(self, workflow_id: str) -> Path:
        if not VALID_ID.fullmatch(workflow_id):
            raise WorkflowNotFoundError(workflow_id)  # no file could have that name
        return self.dir / f"{workflow_id}.json"

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        Path(tmp).replace(path)

    def get(self, workflow_id: str) -> Workflow:
        path = self._path(workflow_id)
        if not path.is_file():
            raise WorkflowNotFoundError(workflow_id)
        return parse_workflow(path.read_bytes())

    def exists(self, workflow_id: str) -> bool:
        return bool(VALID_ID.fullmatch(workflow_id)) and self._path(workflow_id).is_file()

    def save(self, wf: Workflow, *, replace: bool) -> Workflow:
        """Store ``wf`` (an id ``wf-<16 hex>`` is made when it has none); ``replace``: it must
        exist (PUT) - else WorkflowNotFoundError. The previous version goes to its history."""
        if not wf.id:
            wf = wf.model_copy(update={"id": f"wf-{uuid.uuid4().hex[:16]}"})
        path = self._path(wf.id)
        old = parse_workflow(path.read_bytes()) if path.is_file() else None
        if replace and old is None:
            raise WorkflowNotFoundError(wf.id)
        stamp = now_iso()
        created = (old.created_at if old is not None else "") or wf.created_at or stamp
        wf = wf.model_copy(update={"created_at": created, "updated_at": stamp})
        if old is not None:
            self._write(self.dir / wf.id / "history" / f"{_safe_name(stamp)}.json", old.to_json())
        self._write(path, wf.to_json())
        return wf

    def all(self) -> list[Workflow]:
        """Every definition, newest ``updated_at`` first (unreadable files are skipped)."""
        out = []
        for path in self.dir.glob("*.json") if self.dir.is_dir() else ():
            try:
                out.append(parse_workflow(path.read_bytes()))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda w: w.updated_at, reverse=True)

    def count(self) -> int:
        return sum(1 for _ in self.dir.glob("*.json")) if self.dir.is_dir() else 0

    def history(self, workflow_id: str) -> list[dict[str, Any]]:
        """``[{id, updated_at, path}]`` of the archived versions, newest first."""
        if not self.exists(workflow_id):
            raise WorkflowNotFoundError(workflow_id)
        out = []
        for path in (self.dir / workflow_id / "history").glob("*.json"):
            try:
                updated = json.loads(path.read_bytes()).get("updated_at", "")
            except (OSError, ValueError):
                continue
            out.append({"id": workflow_id, "updated_at": updated, "path": str(path)})
        return sorted(out, key=lambda h: h["updated_at"], reverse=True)


class RunStore:
    """Run records in the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def get(self, run_id: str) -> Run | None:
        data = self.store.kv_get(RUNS, run_id)
        return None if data is None else Run.from_dict(data)

    def by_key(self, workflow_id: str, key: str) -> Run | None:
        run_id = self.store.kv_get(RUN_KEYS, f"{workflow_id}::{key}")
        return None if run_id is None else self.get(run_id)

    async def save(self, runs: Sequence[Run]) -> None:
        futures = [self.store.kv_put(RUNS, r.id, r.to_dict()) for r in runs]
        for r in runs:
            if r.idempotency_key:
                key = f"{r.workflow_id}::{r.idempotency_key}"
                futures.append(self.store.kv_put(RUN_KEYS, key, r.id))
        for f in futures:
            await asyncio.wrap_future(f)

    def all(self) -> list[Run]:
        """Every run, by id."""
        return self._select("1 ORDER BY key", ())

    def unfinished(self) -> list[Run]:
        """Every run not in a terminal state (what a restarted engine takes up), by id. A
        record without a status is pending, as :meth:`Run.from_dict` reads it."""
        return self._select(
            "coalesce(json_extract(value, '$.status'), 'pending')"
            " NOT IN (SELECT value FROM json_each(?)) ORDER BY key",
            (json.dumps(sorted(RUN_TERMINAL)),),
        )

    def of_workflow(self, workflow_id: str, limit: int) -> list[Run]:
        """The newest ``limit`` runs of one workflow, newest first (ties by id)."""
        return self._select(
            "json_extract(value, '$.workflow_id') = ?"
            " ORDER BY json_extract(value, '$.created_at') DESC, key LIMIT ?",
            (workflow_id, limit),
        )

    def _select(self, where: str, params: tuple[Any, ...]) -> list[Run]:
        """Runs whose records match ``where`` (SQL over the record's JSON, ``json_extract``):
        SQLite filters and orders them, so only what is returned is decoded, not every run
        of every workflow."""
        # ``where`` is this class's own SQL; values come as parameters
        sql = f"SELECT value FROM kv WHERE namespace = '{RUNS}' AND {where}"  # noqa: S608
        rows = self.store.read(lambda conn: conn.execute(sql, params).fetchall())
        return [Run.from_dict(loads_stored(v)) for (v,) in rows]


def delete_finished_runs(conn: sqlite3.Connection, older_than: float) -> int:
    """Write op (retention): delete runs that finished before ``older_than`` and their
    idempotency keys (a repeat of such a key then starts a new run); running runs stay."""
    n = conn.execute(  # a run has completed_at once it is finished (RUN_TERMINAL), never before
        "DELETE FROM kv WHERE namespace = ? AND json_extract(value, '$.completed_at') < ?",
        (RUNS, older_than),
    ).rowcount
    if n:
        conn.execute(
            "DELETE FROM kv WHERE namespace = ? AND json_extract(value, '$') NOT IN"
            " (SELECT key FROM kv WHERE namespace = ?)",
            (RUN_KEYS, RUNS),
        )
    return int(n)

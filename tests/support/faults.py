"""What every fault test checks around its fault: tasks acknowledged before, during and after it
all complete (0 acknowledged tasks lost), and the runtime answers Health at the end.

:class:`TaskStream` submits batches of tasks with ids of its own from a thread (a client of its
own) while the fault happens; only what a submit acknowledged counts, a refused batch is kept
with its error. :func:`assert_none_lost` waits for every acknowledged id; :func:`assert_health`
asks the Health RPC through the client. :func:`events_of` reads a resource's rows of the events
table (what a service went through), straight from the state store. :func:`runtime_of_its_own`
is a runtime for a fault that is not for sharing, :func:`grpc_client` (:func:`connected`) a
client of its gateway.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rayinfra import AgentInfraSync, raywrap, runtime
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from rayinfra.connection import read_connection
from tests.conftest import make_runtime_spec


@contextlib.contextmanager
def runtime_of_its_own(
    prefix: str, extra_toml: str = "", *, ray_driver: bool = False
) -> Iterator[RayinfraConfig]:
    """A runtime of its own (ports, state dir: :func:`tests.conftest.make_runtime_spec` with
    ``extra_toml``), started; with ``ray_driver`` this process is a Ray driver of it
    (:mod:`rayinfra.raywrap`). Afterwards its services and its head are stopped and its files
    removed."""
    spec = make_runtime_spec(prefix, extra_toml)
    config = load_config(env=spec.env()).config
    runtime.start(config)
    try:
        if ray_driver:
            info = read_connection(config.state.dir)
            assert info is not None, "the runtime recorded no connection"
            raywrap.connect(info)
        yield config
    finally:
        if ray_driver:
            raywrap.disconnect()
        runtime.stop_services(config.state.dir, timeout_s=5)
        runtime.stop(config.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)


def grpc_client(config: RayinfraConfig) -> AgentInfraSync:
    """A started gRPC client of the runtime's gateway, with its local token (a trusted caller);
    stop it when done (:func:`connected` does)."""
    addr = dial_addr(config.gateway.orchestrator_grpc_addr)
    return AgentInfraSync(orchestrator_addr=addr, config=config).start()


@contextlib.contextmanager
def connected(config: RayinfraConfig) -> Iterator[AgentInfraSync]:
    """:func:`grpc_client` for the block."""
    infra = grpc_client(config)
    try:
        yield infra
    finally:
        infra.stop()


class TaskStream(threading.Thread):
    """Submits ``batch`` tasks (``payload``, ids ``<prefix>-<n>-<i>``) every ``every_s`` until
    :meth:`stop`, through a started client ``client()`` returns (stopped at the end);
    ``acknowledged`` holds the ids of every batch a submit answered, ``refused`` each refused
    batch's error."""

    def __init__(
        self,
        client: Callable[[], AgentInfraSync],
        prefix: str,
        payload: dict[str, Any],
        *,
        batch: int = 5,
        every_s: float = 0.2,
        task_class: str = "cpu_short",
    ) -> None:
        super().__init__(name=f"tasks-{prefix}", daemon=True)
        self._client = client
        self.prefix = prefix
        self.payload = payload
        self.batch = batch
        self.every_s = every_s
        self.task_class = task_class
        self.acknowledged: list[str] = []
        self.refused: list[str] = []
        self._stop_event = threading.Event()
        self._batches = 0

    def run(self) -> None:
        infra = self._client()
        try:
            while not self._stop_event.is_set():
                ids = [f"{self.prefix}-{self._batches}-{i}" for i in range(self.batch)]
                self._batches += 1
                tasks = [
                    {"task_id": t, "payload": self.payload, "task_class": self.task_class}
                    for t in ids
                ]
                try:
                    infra.submit_tasks(tasks)
                except Exception as e:  # noqa: BLE001 - a refused batch is not acknowledged
                    self.refused.append(f"{type(e).__name__}: {e}")
                else:
                    self.acknowledged.extend(ids)
                self._stop_event.wait(self.every_s)
        finally:
            infra.stop()

    def wait_for(self, n: int, timeout_s: float = 60.0) -> None:
        """Until at least ``n`` tasks were acknowledged."""
        deadline = time.monotonic() + timeout_s
        while len(self.acknowledged) < n:
            assert self.is_alive(), "the task stream ended"
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} acknowledged"
            time.sleep(0.05)

    def stop(self) -> list[str]:
        """Stop submitting; the acknowledged ids."""
        self._stop_event.set()
        self.join(60)
        assert not self.is_alive(), "the task stream did not stop"
        return list(self.acknowledged)


def assert_none_lost(
    infra: AgentInfraSync, ids: list[str], timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Every acknowledged task completed (0 acknowledged tasks lost); their statuses."""
    assert ids, "no task was acknowledged: the test proves nothing"
    done = infra.wait_tasks(ids, timeout=timeout_s)
    lost = {d["task_id"]: (d["status"], d.get("error")) for d in done if d["status"] != "completed"}
    assert not lost, f"{len(lost)} of {len(ids)} acknowledged tasks did not complete: {lost}"
    return done


def assert_health(infra: AgentInfraSync) -> dict[str, Any]:
    """The runtime answers Health, healthy; the answer."""
    health = infra.health_check()
    assert health["healthy"], health
    return health


def events_of(config: RayinfraConfig, resource_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event type, data)`` of every row of the events table about ``resource_id`` (a task id,
    a service name), oldest first, read from the runtime's state store (read-only)."""
    uri = f"file:{config.state.db_path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT event_type, data FROM events WHERE resource_id = ? ORDER BY seq",
            (resource_id,),
        ).fetchall()
    return [(t, json.loads(d)) for t, d in rows]

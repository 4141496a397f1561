"""The fuzz tests' runtime, clients, hypothesis profiles and the check that nothing was harmed.

One runtime for the whole package: the session runtime's own fixture (tests/integration/
conftest.py ``rt``: same config, same start and stop), package-scoped here so that it is
stopped before tests/integration starts its own (two runtimes never run side by side; the
fuzzer's thousands of requests never reach the runtime the other integration tests share).

After each fuzz module the runtime must be unharmed (:func:`assert_unharmed`): both gRPC servers
SERVING and Health healthy, both HTTP ``/health`` 200, every stream the fuzzer opened closed
again, every task the fuzzer got accepted finished (they are no-ops), the services as they were,
and a normal task submitted afterwards completes.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import ray
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings

from rayinfra.api import stubs
from rayinfra.config import NAMESPACE
from tests.fuzz import work
from tests.fuzz.grpc_targets import Caller, Prefixes
from tests.fuzz.rawhttp import RawHttp
from tests.fuzz.runner import Tally, profile_name, register_profiles
from tests.integration import conftest as integration
from tests.integration.conftest import Runtime
from tests.support.gateway_clients import Clients, gateway_clients
from tests.support.polling import wait_until

register_profiles()

opb, _ = stubs.orchestrator()
epb, _ = stubs.env_manager()
CHANNEL_OPTIONS = work.CHANNEL_OPTIONS
#: fuzz worker processes (they draw examples in parallel) and threads in each (they keep the
#: server busy while one draws)
PROCESSES = int(os.environ.get("FUZZ_PROCESSES") or os.cpu_count() or 2)
THREADS = int(os.environ.get("FUZZ_THREADS") or 4)
SERVERS = (
    "orchestrator_grpc_addr",
    "env_manager_grpc_addr",
    "orchestrator_http_addr",
    "env_manager_http_addr",
)


@pytest.fixture(scope="package")
def rt() -> Iterator[Runtime]:
    """The session runtime (tests/integration/conftest.py), for this package only."""
    yield from integration.rt.__wrapped__()


@dataclass
class Fuzzing:
    """What the fuzz tests share: clients of the runtime and what the fuzzer created there."""

    clients: Clients
    prefixes: Prefixes
    caller: Caller
    workers: ProcessPoolExecutor
    accepted: set[str] = field(default_factory=set)  # task ids the runtime accepted
    _local: threading.local = field(default_factory=threading.local)

    def run(self, kind: str, target_id: str, streaming: bool = False) -> Tally:
        """The profile's ``max_examples`` examples of a target (``kind``: grpc or http), shared
        among the worker processes; fails the test with the first failing example's report.
        A ``streaming`` target gets three times the threads: most of its examples wait out
        their read window."""
        examples = settings.get_profile(profile_name()).max_examples
        share = math.ceil(examples / PROCESSES)
        threads = THREADS * (3 if streaming else 1)
        futures = [
            self.workers.submit(work.run_share, kind, target_id, i, share, threads)
            for i in range(PROCESSES)
        ]
        tally = Tally(target_id)
        failures = []
        for f in futures:
            part = f.result()
            tally.outcomes.update(part.outcomes)
            tally.accepted |= part.accepted
            tally.seconds = max(tally.seconds, part.seconds)
            if part.failure:
                failures.append(part.failure)
        self.accepted |= tally.accepted
        if failures:
            pytest.fail(failures[0], pytrace=False)
        return tally

    @property
    def original_decoding(self) -> bool:
        return bool(self.clients.rt.config.gateway.original_payload_decoding)

    def http(self, server: str) -> RawHttp:
        """This thread's connection to the HTTP server of ``gateway.<server>``."""
        conns: dict[str, RawHttp] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        if server not in conns:
            host, _, port = self.clients.addr(server).rpartition(":")
            conns[server] = RawHttp(host, int(port))
        return conns[server]


@pytest.fixture(scope="package")
def fuzzing(rt: Runtime) -> Iterator[Fuzzing]:
    run = uuid.uuid4().hex[:8]
    with gateway_clients(rt, CHANNEL_OPTIONS) as clients:
        orch, env = clients.channels
        caller = Caller({"orchestrator_grpc_addr": orch, "env_manager_grpc_addr": env})
        ctx = work.Context(
            addresses={key: clients.addr(key) for key in SERVERS},
            run=run,
            original_decoding=bool(rt.config.gateway.original_payload_decoding),
        )
        workers = ProcessPoolExecutor(
            PROCESSES,
            mp_context=multiprocessing.get_context("spawn"),  # no Ray, no forked gRPC state
            initializer=work.init,
            initargs=(ctx,),
        )
        try:
            yield Fuzzing(clients, Prefixes(run), caller, workers)
        finally:
            workers.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def unharmed(fuzzing: Fuzzing) -> Iterator[None]:
    """Checks the runtime after the module's tests (see the module docstring)."""
    before = _service_states(fuzzing.clients)
    yield
    assert_unharmed(fuzzing, before)


def _service_states(c: Clients) -> dict[str, str]:
    reply = c.env.GetServicesStatus(epb.GetServicesStatusRequest(), timeout=30)
    return {name: s.status for name, s in reply.services.items()}


def _gateway_streams() -> dict[str, Any]:
    gateway = ray.get_actor("gateway", namespace=NAMESPACE)
    watchers: dict[str, Any] = ray.get(gateway.watchers.remote(), timeout=30)
    return watchers


def assert_unharmed(fz: Fuzzing, services_before: dict[str, str]) -> None:
    c = fz.clients
    for ch in c.channels:  # gRPC health of both servers
        check = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    health = c.orch.Health(opb.HealthRequest(), timeout=30)
    assert health.healthy, dict(health.services)
    for server in ("orchestrator_http_addr", "env_manager_http_addr"):
        with c.http(server) as h:
            r = h.get("/health")
            assert r.status_code == 200, (server, r.text)
    # every stream the fuzzer opened (and abandoned after its window) is closed again
    wait_until(
        "the gateway's streams to close",
        lambda: not any(_gateway_streams()["subscribers"].values()),
        timeout=60,
    )
    # every task the fuzzer got accepted is a no-op: each finishes
    ids = sorted(fz.accepted)
    deadline = time.monotonic() + 300
    unfinished = ids
    while unfinished and time.monotonic() < deadline:
        left = []
        for i in range(0, len(unfinished), 500):
            reply = c.orch.GetTasks(
                opb.GetTasksRequest(task_ids=unfinished[i : i + 500]), timeout=60
            )
            assert not reply.not_found, reply.not_found[:5]  # accepted means kept
            left += [t.task_id for t in reply.tasks if t.status in ("pending", "running")]
        unfinished = left
        if unfinished:
            time.sleep(0.5)
    assert not unfinished, f"{len(unfinished)} fuzzed tasks did not finish: {unfinished[:5]}"
    assert _service_states(c) == services_before
    # a normal task submitted now completes
    task_id = f"{fz.prefixes.of('after')}{uuid.uuid4().hex[:6]}"
    reply = c.orch.SubmitTask(
        opb.SubmitTaskRequest(id=task_id, payload={"type": "echo", "n": "1"}), timeout=30
    )
    assert reply.success and reply.task_id == task_id

    def finished() -> Any:
        st = c.orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=task_id), timeout=30)
        return st if st.status in ("completed", "failed", "cancelled") else None

    st = wait_until("the task submitted after fuzzing", finished, timeout=60)
    assert (st.status, dict(st.result)) == ("completed", {"n": "1"}), (st.status, st.error)

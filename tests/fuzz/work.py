"""What a fuzz worker process runs: one share of one target's examples, over its own clients.

Workers are spawned (a fresh interpreter: no Ray, no forked gRPC state) by the ``workers``
fixture (tests/fuzz/conftest.py) and live for the package. Each builds its own gRPC channels and
HTTP connections from a :class:`Context`, runs its share with
:func:`tests.fuzz.runner.fuzz` in ``FUZZ_THREADS`` threads, and sends back a :class:`Share`:
the outcomes, the task ids the runtime accepted, and the failure (hypothesis' report) if any.
"""

from __future__ import annotations

import threading
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from rayinfra.api import stubs
from tests.fuzz import grpc_targets, http_targets
from tests.fuzz.grpc_targets import Caller, Prefixes
from tests.fuzz.protowire import request_bytes
from tests.fuzz.rawhttp import RawHttp
from tests.fuzz.runner import Tally, fuzz, register_profiles

#: replies of any size: a ListWorkflows after thousands of fuzzed workflows is large
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", -1),)


@dataclass(frozen=True)
class Context:
    addresses: dict[str, str]  # gateway config key -> host:port
    run: str  # the fuzz run's id (the prefixes of what it creates)
    original_decoding: bool  # gateway.original_payload_decoding


@dataclass
class Share:
    outcomes: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    seconds: float = 0.0
    failure: str = ""  # the failing example's report; empty: none


class Clients:
    """A worker's clients: one channel per gRPC server, one HTTP connection per thread."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.prefixes = Prefixes(ctx.run)
        self.channels = {
            key: grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
            for key, addr in ctx.addresses.items()
            if key.endswith("grpc_addr")
        }
        self.caller = Caller(self.channels)
        self._local = threading.local()

    def http(self, server: str) -> RawHttp:
        conns: dict[str, RawHttp] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        if server not in conns:
            host, _, port = self.ctx.addresses[server].rpartition(":")
            conns[server] = RawHttp(host, int(port))
        return conns[server]


_clients: Clients | None = None


def init(ctx: Context) -> None:
    """The worker process's initializer."""
    global _clients
    register_profiles()
    _clients = Clients(ctx)


def grpc_check(c: Clients, t: grpc_targets.GrpcTarget) -> Any:
    def check(raw: bytes, tally: Tally) -> None:
        sent = grpc_targets.guarded(t, raw, c.prefixes, c.ctx.original_decoding)
        outcome = c.caller.call(t, sent)
        why = grpc_targets.judge(t, outcome)
        assert why is None, f"{t.id}: {why}\nsent: {sent[:400]!r}"
        tally.add(outcome.code, grpc_targets.accepted_task_ids(t, outcome))

    return check


def http_check(c: Clients, r: http_targets.Route) -> Any:
    def check(request: http_targets.HttpRequest, tally: Tally) -> None:
        response = request.send(c.http(r.server))
        verdict = http_targets.judge(response, r)
        assert verdict.ok, f"{r.id}: {verdict.why}\nsent: {request!r:.600}"
        ids: tuple[str, ...] = ()
        if r.path == "/queue/submit" and response.status == 200:
            ids = (verdict.json["id"],)
        tally.add(str(response.status), ids)

    return check


def run_share(kind: str, target_id: str, worker: int, examples: int, threads: int) -> Share:
    """Worker ``worker``'s ``examples`` examples of the gRPC method or HTTP route ``target_id``."""
    c = _clients
    assert c is not None, "init() was not called"
    if kind == "grpc":
        t = {t.id: t for t in grpc_targets.discover()}[target_id]
        if t.method == "PollTaskChanges":  # where the feed is now (see grpc_targets._no_wait)
            opb, _ = stubs.orchestrator()
            head = opb.PollTaskChangesRequest(after_seq=2**62, timeout_seconds=0)
            outcome = c.caller.call(t, head.SerializeToString())
            assert outcome.code == "OK" and outcome.response is not None, outcome
            grpc_targets.FEED_HEAD = opb.PollTaskChangesResponse.FromString(outcome.response).seq
        strategy, check = request_bytes(t.request), grpc_check(c, t)
    else:
        r = {r.id: r for r in http_targets.ROUTES}[target_id]
        strategy, check = http_targets.requests(r, c.prefixes), http_check(c, r)
    tally = Tally(target_id)
    failure = ""
    try:
        fuzz(target_id, strategy, check, threads, examples, seed_key=f"{worker}.", tally=tally)
    except BaseException as e:  # noqa: BLE001 - sent back whole: the test fails with it
        failure = "".join(traceback.format_exception(e))
    return Share(tally.outcomes, tally.accepted, tally.seconds, failure)

"""The service manager's two retry loops, timed on the real process driver, on a runtime of this
module's own; each test ends with every acknowledged task completed and Health answered.

- **Start attempts** (``rayinfra/services/manager.py``: tenacity's ``wait_exponential_jitter``,
  ``services.start_attempts`` tries): a service whose command does not exist fails each start.
  Each failed attempt is an event ``service_start_attempt_failed`` (when it began and failed,
  the wait before the next); the waits are ``initial * 2**n`` plus up to ``initial`` of
  jitter, capped at ``max`` (``services.start_retry_initial_s`` and ``start_retry_max_s``, set
  here to values unlike the defaults, 0.5 s and 30 s, with the last wait at the cap), the
  measured gaps follow them, and the start stops after ``start_attempts`` with the last error
  and the count.
- **Restarts by the health checker** (``rayinfra/services/probes.py``'s ``RestartBudget``, the
  service's ``restart`` policy): a service that exits soon after each start is restarted after
  ``backoff_initial_s * 2**n`` (capped at ``backoff_max_s``) ± ``jitter``; each wait is an event
  ``service_restart_scheduled``, each new instance a ``service_started`` with its start time;
  after ``max_attempts`` restarts within ``window_s`` it is ``failed``, saying so.

Timing checks are generous (a busy 2-core machine): each gap is at least its wait and at most
its wait plus a second or two; the waits are checked against their bands exactly.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from rayinfra.client.services import ServicesClient
from rayinfra.config import RayinfraConfig, ServicesSection
from tests.support.faults import (
    TaskStream,
    assert_health,
    assert_none_lost,
    events_of,
    grpc_client,
    runtime_of_its_own,
)
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

START_ATTEMPTS = 6
RETRY_INITIAL_S = 0.2  # services.start_retry_initial_s, also tenacity's jitter
RETRY_MAX_S = 2.0  # services.start_retry_max_s: the 5th wait (3.2 s + jitter) is capped
RESTART = {
    "backoff_initial_s": 0.3,
    "backoff_max_s": 1.2,
    "jitter": 0.5,
    "max_attempts": 4,
    "window_s": 120,
}
MISSING = "/nonexistent/rayinfra-backoff-server"
#: how much later than its wait an attempt may begin (an event write, a supervisor's start)
SLACK_S = 1.5


RESTART_TOML = "{ " + ", ".join(f"{k} = {v}" for k, v in RESTART.items()) + " }"
SERVICES_TOML = f"""
[services]
profile = "none"
start_attempts = {START_ATTEMPTS}
start_retry_initial_s = {RETRY_INITIAL_S}
start_retry_max_s = {RETRY_MAX_S}
stop_timeout_s = 2

[services.definitions.nostart]
driver = "process"
argv = {json.dumps([MISSING, "--port", "1"])}

[services.definitions.crashing]
driver = "process"
argv = {json.dumps([sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"])}
restart = {RESTART_TOML}
"""


@pytest.fixture(scope="module")
def cfg() -> Iterator[RayinfraConfig]:
    with runtime_of_its_own("backoff", SERVICES_TOML) as config:
        yield config


def start(cfg: RayinfraConfig, name: str) -> dict[str, Any]:
    """Start ``name``; its final update."""
    with ServicesClient.from_config(cfg) as svc:
        (final,) = [u for u in svc.start([name]) if u["progress"] == 100]
    return final


def of_type(cfg: RayinfraConfig, name: str, kind: str) -> list[dict[str, Any]]:
    return [data for t, data in events_of(cfg, name) if t == kind]


def test_start_attempts_back_off_exponentially_with_jitter_then_stop(cfg: RayinfraConfig) -> None:
    # the configured waits: the first lies below the default's band, the cap below its cap
    assert cfg.services.start_retry_initial_s == RETRY_INITIAL_S
    assert cfg.services.start_retry_max_s == RETRY_MAX_S
    default = ServicesSection()
    assert default.start_retry_initial_s > 2 * RETRY_INITIAL_S
    assert default.start_retry_max_s > RETRY_MAX_S
    infra = grpc_client(cfg)
    stream = TaskStream(lambda: grpc_client(cfg), f"bo-{uuid.uuid4().hex[:6]}", {"type": "noop"})
    stream.start()
    try:
        final = start(cfg, "nostart")
        ids = stream.stop()
        # the start stopped at the configured count, with the last error and the count
        assert final["status"] == "failed", final
        assert MISSING in final["message"], final
        assert f"(gave up after {START_ATTEMPTS} attempts)" in final["message"], final
        attempts = of_type(cfg, "nostart", "service_start_attempt_failed")
        assert [a["attempt"] for a in attempts] == list(range(1, START_ATTEMPTS + 1)), attempts
        assert {a["of"] for a in attempts} == {START_ATTEMPTS}
        assert {a["reason"] for a in attempts} == {"exec_failed"}
        assert attempts[-1]["retry_in_s"] is None  # no wait after the last
        waits = [float(a["retry_in_s"]) for a in attempts[:-1]]
        gaps = [b["started_at"] - a["failed_at"] for a, b in pairwise(attempts)]
        for n, (wait, gap) in enumerate(zip(waits, gaps, strict=True)):
            nominal = RETRY_INITIAL_S * 2**n
            # tenacity: initial * 2**n + uniform(0, initial), capped at max
            band = (min(nominal, RETRY_MAX_S), min(nominal + RETRY_INITIAL_S, RETRY_MAX_S))
            assert band[0] <= wait <= band[1], (n, waits)
            assert wait - 0.01 <= gap <= wait + SLACK_S, (n, waits, gaps)  # waited, not more
            assert RETRY_INITIAL_S - 0.01 <= gap <= RETRY_MAX_S + RETRY_INITIAL_S + SLACK_S
        # roughly exponential: each gap at least the last, the last at least twice the first
        assert all(b >= a - 0.1 for a, b in pairwise(gaps)), gaps
        assert gaps[-1] >= 2 * gaps[0], gaps
        assert waits[-1] == RETRY_MAX_S, waits  # the configured cap, not the default 30 s
        jitter = [w - RETRY_INITIAL_S * 2**n for n, w in enumerate(waits[:-1])]
        assert len({round(j, 3) for j in jitter}) > 1, waits  # jittered, not all the same
        (failed,) = of_type(cfg, "nostart", "service_failed")
        assert failed["error"] == final["message"].removeprefix("nostart failed: ")
        assert_none_lost(infra, ids)
        assert_health(infra)
        print(f"waits {waits}, measured gaps {[round(g, 3) for g in gaps]}")
    finally:
        if stream.is_alive():
            stream.stop()
        infra.stop()


def test_monitor_restarts_back_off_then_the_service_fails(cfg: RayinfraConfig) -> None:
    infra = grpc_client(cfg)
    stream = TaskStream(lambda: grpc_client(cfg), f"br-{uuid.uuid4().hex[:6]}", {"type": "noop"})
    stream.start()
    try:
        final = start(cfg, "crashing")
        assert final["status"] == "healthy", final  # it runs (no health check), then exits
        failed = wait_until(
            "the health checker to give up on crashing",
            lambda: of_type(cfg, "crashing", "service_failed"),
            timeout=60,
            step=0.2,
        )
        ids = stream.stop()
        limit, window = RESTART["max_attempts"], RESTART["window_s"]
        assert f"restart budget used up ({limit} restarts within {window}s)" in failed[0]["message"]
        scheduled = of_type(cfg, "crashing", "service_restart_scheduled")
        assert [s["restart"] for s in scheduled] == list(range(1, limit + 1)), scheduled
        assert {s["reason"] for s in scheduled} == {"exited"}
        starts = of_type(cfg, "crashing", "service_started")
        assert len(starts) == limit + 1  # the first start, then one per restart
        delays = [float(s["delay_s"]) for s in scheduled]
        gaps = [
            b["started_at"] - s["scheduled_at"] for s, b in zip(scheduled, starts[1:], strict=True)
        ]
        base, cap, jitter = (
            RESTART["backoff_initial_s"],
            RESTART["backoff_max_s"],
            RESTART["jitter"],
        )
        for n, (delay, gap) in enumerate(zip(delays, gaps, strict=True)):
            nominal = min(base * 2**n, cap)
            # RestartBudget: the capped delay, +- jitter, capped again
            assert nominal * (1 - jitter) - 1e-3 <= delay <= min(nominal * (1 + jitter), cap) + 1e-3
            assert delay - 0.01 <= gap <= delay + SLACK_S, (n, delays, gaps)
            assert base * (1 - jitter) - 0.01 <= gap <= cap * (1 + jitter) + SLACK_S
        assert len({round(d / min(base * 2**n, cap), 3) for n, d in enumerate(delays)}) > 1
        row = infra.runtime_status(["crashing"])["services"]["crashing"]
        # failed; the message is the health checker's ("restart budget used up ...") unless the
        # registry's own refresh saw the exit first: then it is "exited (exit code 3)"
        assert row["status"] == "failed", row
        assert_none_lost(infra, ids)
        assert_health(infra)  # an optional service failed: degraded, not unhealthy
        print(f"delays {delays}, measured gaps {[round(g, 3) for g in gaps]}")
    finally:
        if stream.is_alive():
            stream.stop()
        infra.stop()

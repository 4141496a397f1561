"""The ``event_bus`` actor of the session runtime, which has no Kafka broker configured: it idles,
says so, and still serves its metrics beside the scheduler's (the bus with a broker:
tests/e2e/test_event_bus.py)."""

from __future__ import annotations

import httpx
import pytest
import ray

from rayinfra.client import AgentInfraSync
from rayinfra.client.discovery import grpc_transport
from rayinfra.config import dial_addr
from rayinfra.raywrap import NAMESPACE
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration

BUS_METRICS = ("events_published_total", "events_publish_lag", "events_publish_errors_total")


def test_without_a_broker_the_event_bus_idles_and_says_so(rt: Runtime) -> None:
    assert rt.config.events.kafka_bootstrap_servers is None
    bus = ray.get_actor("event_bus", namespace=NAMESPACE)
    st = ray.get(bus.status.remote(), timeout=30)
    assert st["state"] == "idle"
    assert "kafka_bootstrap_servers" in st["reason"] and "KAFKA_BOOTSTRAP_SERVERS" in st["reason"]
    assert st["cursor"] is None and st["lag"] == 0 and st["topic"] is None
    assert st["latest_seq"] > 0  # events exist; nothing is publishing them
    assert st["published_total"] == 0 and st["errors_total"] == 0
    assert ray.get(bus.ping.remote(), timeout=30)["events"] == "idle"
    # the CLI's status (the actors' pings) shows it too
    with AgentInfraSync(
        transport=grpc_transport(rt.config, dial_addr(rt.config.gateway.orchestrator_grpc_addr))
    ) as infra:
        assert infra.runtime_status()["actors"]["event_bus"]["events"] == "idle"
        got = infra.get_metrics()  # GetMetrics: the bus's series beside the scheduler's
    assert {k: got[k] for k in BUS_METRICS} == dict.fromkeys(BUS_METRICS, 0.0)
    assert "env_queue_depth" in got


def test_the_orchestrators_metrics_page_carries_the_event_bus_series(rt: Runtime) -> None:
    http = dial_addr(rt.config.gateway.orchestrator_http_addr)
    text = httpx.get(f"http://{http}/metrics", timeout=30).text
    series = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert "env_queue_depth" in series  # the scheduler's
    assert {k: float(series[k]) for k in BUS_METRICS} == dict.fromkeys(BUS_METRICS, 0.0)
    # the env-manager's page stays the registry's alone
    env = dial_addr(rt.config.gateway.env_manager_http_addr)
    assert "events_published_total" not in httpx.get(f"http://{env}/metrics", timeout=30).text

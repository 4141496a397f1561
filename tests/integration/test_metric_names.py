"""Every metric name the API documents is served, and the control actors' metrics reach Ray's
own metrics endpoint (what the Ray dashboard and the bundled Prometheus config scrape)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from rayinfra import AgentInfraSync
from rayinfra.config import dial_addr
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration

#: reference/api.md: "Metric names the original exposed and users graph (keep them)"
ORCHESTRATOR = (
    "env_queue_depth", "gpu_wait_seconds", "env_error_rate", "queue_depth",
    "orchestrator_concurrency_limit", "orchestrator_inflight_tasks",
    "orchestrator_task_errors_total", "queue_tasks_submitted_total",
    "queue_tasks_processed_total", "queue_tasks_completed_total", "events_published_total",
    "slurm_jobs_submitted_total", "slurm_jobs_completed_total", "slurm_jobs_failed_total",
    "workflows_total",
)  # fmt: skip
ENV_MANAGER = (
    "env_manager_service_start_total", "env_manager_service_stop_total",
    "env_manager_failed_service_starts_total", "env_manager_active_services",
    "env_manager_service_health_check_duration_seconds", "env_manager_docker_api_duration_seconds",
)  # fmt: skip
#: one mirrored series of each control actor that has metrics, on Ray's endpoint
ON_RAY = (
    "ray_rayinfra_env_queue_depth",  # scheduler (Ray prefixes its exports with ray_)
    "ray_rayinfra_workflows_total",  # workflows
    "ray_rayinfra_events_published_total",  # event_bus
    "ray_rayinfra_env_manager_active_services",  # service_registry
)


def families(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition (each sample's name, and its family's)."""
    out = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out.add(line.split()[2])
        elif line and not line.startswith("#"):
            out.add(line.split("{")[0].split()[0])
    return out


def test_every_documented_name_is_served_and_mirrored_to_ray(rt: Runtime) -> None:
    with AgentInfraSync(config=rt.config) as infra:  # a failure: the labelled error counter
        tid = f"names-{uuid.uuid4().hex[:8]}"
        infra.submit_task(tid, {"type": "no-such-handler"})
        assert infra.wait_task(tid, timeout=60)["status"] == "failed"
    gw = rt.config.gateway
    with httpx.Client(timeout=30) as http:
        orch = families(http.get(f"http://{dial_addr(gw.orchestrator_http_addr)}/metrics").text)
        env = families(http.get(f"http://{dial_addr(gw.env_manager_http_addr)}/metrics").text)
        assert [n for n in ORCHESTRATOR if n not in orch] == []
        assert [n for n in ENV_MANAGER if n not in env] == []
        ray_url = f"http://127.0.0.1:{rt.spec.ports['metrics_export_port']}/metrics"
        deadline = time.monotonic() + 90  # actors publish every 5 s, Ray exports every few
        while True:
            missing = [n for n in ON_RAY if n not in families(http.get(ray_url).text)]
            if not missing:
                break
            assert time.monotonic() < deadline, f"not on Ray's endpoint: {missing}"
            time.sleep(2)

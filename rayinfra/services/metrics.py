"""The service manager's metrics, with the original env-manager's names (seed-system.md §3).

- ``env_manager_service_start_total{service_name,status}``: success / failed.
- ``env_manager_service_stop_total{service_name,status}``: success / error.
- ``env_manager_failed_service_starts_total{service_name,reason}``: driver_error,
  health_check_failed, unavailable, blocked.
- ``env_manager_active_services``: services currently running and not unhealthy.
- ``env_manager_service_health_check_duration_seconds{service_name,status}``: probe latency.
- ``env_manager_docker_api_duration_seconds{operation,status}``: driver calls.
- ``env_manager_service_restarts_total{service_name,reason}`` (new): restarts by the checker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rayinfra.metrics import PrivateMetrics

_BY_STATUS = ["service_name", "status"]
_BY_REASON = ["service_name", "reason"]


class ServiceMetrics(PrivateMetrics):
    def __init__(self) -> None:
        r = CollectorRegistry(auto_describe=True)
        super().__init__(r)
        self.starts = Counter(
            "env_manager_service_start", "Service starts by outcome", _BY_STATUS, registry=r
        )
        self.stops = Counter(
            "env_manager_service_stop", "Service stops by outcome", _BY_STATUS, registry=r
        )
        self.failed_starts = Counter(
            "env_manager_failed_service_starts",
            "Failed service starts by reason",
            _BY_REASON,
            registry=r,
        )
        self.active = Gauge(
            "env_manager_active_services", "Services running and not unhealthy", registry=r
        )
        self.health_duration = Histogram(
            "env_manager_service_health_check_duration_seconds",
            "Health probe duration",
            _BY_STATUS,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.driver_duration = Histogram(
            "env_manager_docker_api_duration_seconds",
            "Driver (Docker engine / process) call duration",
            ["operation", "status"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.restarts = Counter(
            "env_manager_service_restarts",
            "Restarts made by the health checker",
            _BY_REASON,
            registry=r,
        )

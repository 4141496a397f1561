"""The ``workflows`` actor's metrics, on a private registry.

- ``workflows_total``: workflow definitions stored (the original's gauge);
- ``workflow_runs_active``: runs not finished;
- ``workflow_runs_total{status}``: runs that ended, by status (succeeded, failed, cancelled);
- ``workflow_steps_total{status}``: step attempts that ended, by how (succeeded, failed,
  retried).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from rayinfra.metrics import PrivateMetrics


class WorkflowMetrics(PrivateMetrics):
    def __init__(self) -> None:
        r = CollectorRegistry()
        super().__init__(r)
        self.workflows = Gauge("workflows_total", "Workflow definitions stored", registry=r)
        self.active = Gauge("workflow_runs_active", "Workflow runs not finished", registry=r)
        self.runs = Counter("workflow_runs", "Workflow runs that ended", ["status"], registry=r)
        self.steps = Counter(
            "workflow_steps", "Workflow step attempts that ended", ["status"], registry=r
        )

    def on_events(self, event_types: list[str], data: list[dict[str, object]]) -> None:
        """Count what a batch of run events says ended."""
        for event_type, d in zip(event_types, data, strict=True):
            if event_type == "step_completed":
                self.steps.labels("succeeded").inc()
            elif event_type == "step_failed":
                self.steps.labels("failed" if d.get("final") else "retried").inc()
            elif event_type in ("workflow_completed", "workflow_failed", "workflow_cancelled"):
                status = {"workflow_completed": "succeeded", "workflow_failed": "failed"}
                self.runs.labels(status.get(event_type, "cancelled")).inc()

"""The event bus's metrics, on a private CollectorRegistry (served with the scheduler's on the
orchestrator's ``/metrics`` and GetMetrics, and mirrored to Ray's metrics).

- ``events_published_total``: records the Kafka broker acknowledged (an event sent again after
  an outage or a restart counts again: at-least-once);
- ``events_publish_lag``: events in the table not yet acknowledged (0 while no broker is set);
- ``events_publish_errors_total``: a record the producer could not take or that failed, and every
  ``events.kafka_timeout_s`` a round waits unanswered.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from rayinfra.metrics import PrivateMetrics


class EventBusMetrics(PrivateMetrics):
    def __init__(self) -> None:
        r = CollectorRegistry()
        super().__init__(r)
        self.published = Counter(
            "events_published", "Events the Kafka broker acknowledged", registry=r
        )
        self.lag = Gauge("events_publish_lag", "Events not yet acknowledged by Kafka", registry=r)
        self.errors = Counter(
            "events_publish_errors", "Failed or unanswered event publishes", registry=r
        )

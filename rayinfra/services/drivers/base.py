"""The interface every service driver implements (Docker, local processes).

Drivers are synchronous and thread-safe: the registry and health-checker actors call them from
worker threads (``asyncio.to_thread``), never on their event loops. Everything a driver starts
carries the labels it is given (``rayinfra.service``, ``rayinfra.cluster``, ``rayinfra.spec``),
and :meth:`Driver.list_owned` finds instances by exact label match, so a restarted registry can
adopt what runs and remove what it no longer owns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from rayinfra.services.spec import ServiceSpec

InstanceState = Literal["created", "running", "exited", "missing"]


class DriverError(RuntimeError):
    """A driver operation failed; ``reason`` is a short machine-readable cause."""

    def __init__(self, message: str, reason: str = "driver_error") -> None:
        super().__init__(message)
        self.reason = reason


class DriverUnavailableError(DriverError):
    """The backend itself cannot be reached (no Docker engine, ...): message carries a hint."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="unavailable")


@dataclass(frozen=True)
class Instance:
    """One running (or stopped) incarnation of a service."""

    id: str  # container id, or the supervised process's "<pid>" for the process driver
    service: str
    driver: str
    state: InstanceState
    labels: Mapping[str, str] = field(default_factory=dict)
    started_at: float | None = None  # unix seconds
    exit_code: int | None = None
    health: str | None = None  # docker's own health status: starting / healthy / unhealthy
    ports: Sequence[int] = ()  # published host ports
    pid: int | None = None  # main process pid on the host, when known

    @property
    def ended(self) -> bool:
        """Gone, or exited with its exit code recorded (the process driver's supervisor records
        it a moment after the child exits: ``exited`` with no code yet has not ended)."""
        return self.state == "missing" or (self.state == "exited" and self.exit_code is not None)


@dataclass(frozen=True)
class Usage:
    """One stats sample; CPU% comes from two samples (see :func:`cpu_percent`)."""

    at: float  # monotonic seconds
    cpu_time_s: float  # total CPU time consumed by the instance
    memory_bytes: int
    rx_bytes: int = 0
    tx_bytes: int = 0
    # whose traffic rx/tx count: "service" (its own interfaces), "namespace" (its network
    # namespace's), "host" (the runtime's namespace: the whole host's), "" (not measured);
    # rayinfra.services.drivers.procnet explains why
    network_scope: str = ""


@dataclass(frozen=True)
class LogLine:
    timestamp: float  # unix seconds with fraction: when the line was produced
    stream: Literal["stdout", "stderr"]
    message: str  # without the trailing newline


@dataclass(frozen=True)
class PullProgress:
    image: str
    status: Literal["downloading", "extracting", "complete", "error"]
    current: int  # bytes
    total: int  # bytes (0 = unknown)
    message: str = ""


def cpu_percent(a: Usage, b: Usage) -> float:
    """CPU% between two samples (100 = one core busy)."""
    dt = b.at - a.at
    if dt <= 0:
        return 0.0
    return max(0.0, (b.cpu_time_s - a.cpu_time_s) / dt * 100.0)


class Driver(Protocol):
    """What the registry and health checker need from a backend."""

    kind: str

    def check(self) -> None:
        """Raise :class:`DriverUnavailableError` (with a hint) if the backend cannot be used."""

    def start(self, spec: ServiceSpec, labels: Mapping[str, str]) -> Instance:
        """Create and start an instance of ``spec`` carrying ``labels``; return it running.

        An instance of the same service and cluster whose ``rayinfra.spec`` label matches is
        reused (started if stopped); one with another spec is removed and recreated.
        """

    def prepare(self, spec: ServiceSpec, labels: Mapping[str, str]) -> None:
        """Make the next :meth:`start` of ``spec`` fast, while what it depends on starts (a
        container driver creates the container; a driver with nothing to do ahead does
        nothing). Errors may be left for the start to report."""

    def discard_prepared(self, spec: ServiceSpec, labels: Mapping[str, str]) -> None:
        """Undo a :meth:`prepare` that no start followed (a dependency failed)."""

    def stop(self, instance_id: str, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; an already-gone instance is not an error."""

    def remove(self, instance_id: str) -> None:
        """Stop if needed and remove the instance (containers: ``force``; not volumes)."""

    def inspect(self, instance_id: str) -> Instance:
        """Current state; ``state="missing"`` when it no longer exists."""

    def wait_exit(self, instance_id: str, timeout_s: float) -> Instance:
        """Block until the instance has ended (:attr:`Instance.ended`) or ``timeout_s`` passed, then return its state as :meth:`inspect` does
        (still ``running`` when the time ran out). For a job whose end something waits on:
        noticed when it happens, not at the next poll."""

    def list_owned(self, labels: Mapping[str, str]) -> list[Instance]:
        """Every instance (running or not) whose labels include all of ``labels`` exactly."""

    def usage(self, instance_id: str) -> Usage:
        """One resource sample."""

    def logs(
        self, instance_id: str, *, follow: bool, tail: int | None, since: float | None
    ) -> Iterator[LogLine]:
        """Log lines oldest first, each with its own timestamp; ``follow`` keeps the iterator
        open until the instance stops (close the generator to stop early)."""

    def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        """Run ``argv`` inside the instance (docker) or on the host (process): (exit code,
        combined output)."""

    def pull(self, image: str) -> Iterator[PullProgress]:
        """Pull ``image`` with byte progress, ending with ``complete`` or raising
        :class:`DriverError`; drivers without images yield nothing."""

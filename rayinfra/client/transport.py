"""What :class:`~rayinfra.client.AgentInfra` needs from a connection to a runtime.

A transport implements a handful of primitives; every public client method is written once,
in ``AgentInfra``, on top of them (as httpx's ``Client`` sits on a ``BaseTransport``). Two
implementations: :class:`~rayinfra.client.ActorTransport` (Ray actor handles, inside the
cluster) and :class:`~rayinfra.client.GrpcTransport` (the gateway, from anywhere). A test
checks that both implement exactly this protocol, with the same signatures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any, Protocol

from rayinfra.models import TaskPage, TaskStatus


class Transport(Protocol):
    """The primitives. Errors are rayinfra's typed ones (``InvalidArgumentError``,
    ``TaskNotFoundError``, ``UnavailableError``, ...), whichever transport raised them."""

    #: ``"actors"`` or ``"grpc"``
    kind: str

    async def open(self) -> None:
        """Wait until the runtime answers (its task path is ready)."""

    async def close(self) -> None:
        """Release connections (the runtime itself keeps running)."""

    async def submit(self, specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Admit a batch (all or nothing): ``{success, task_id, error}`` per spec, in order,
        once durable. Each spec has the client's keys (``task_id, payload, task_class,
        priority, timeout_s, workflow_id``)."""
        ...

    async def get(
        self, task_ids: Sequence[str], finished_only: bool = False
    ) -> Mapping[str, TaskStatus | None]:
        """Each id's status (``None``: unknown), in the order asked; with ``finished_only`` the
        tasks not finished yet are left out (a waiter's read: their ends come by the feed).
        A status may be decoded each time it is read (:class:`~rayinfra.models.StatusRows`):
        read each once."""
        ...

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """``{task_id, status, cancelled}``; ``TaskNotFoundError`` for an unknown id."""
        ...

    async def list_tasks(
        self, status: str | None, task_class: str | None, limit: int, after: str | None = None
    ) -> TaskPage:
        """The newest tasks, optionally of one state and class: a page of at most ``limit``,
        after the cursor ``after`` (the ``next`` of the previous page; ``None``: the newest),
        with the cursor of the page after it."""
        ...

    async def purge(self, older_than_s: float | None) -> dict[str, int]:
        """Delete finished tasks and events older than ``older_than_s`` (default: retention)."""
        ...

    async def changes(
        self,
        after_seq: int,
        task_ids: Sequence[str] | None,
        timeout_s: float,
        terminal_only: bool,
        keep: Collection[str] | None = None,
    ) -> tuple[int, list[TaskStatus]]:
        """Long-poll the scheduler's task feed: ``(seq, states)`` after ``after_seq`` (only
        ``task_ids`` when given; only finished states with ``terminal_only``); ``(latest, [])``
        after ``timeout_s``. ``FROM_NOW`` as ``after_seq`` answers at once with the latest seq.
        The seq is durable: a caller resumes from it across scheduler restarts. ``keep``: of
        the answer, only the states of these ids, matched before anything is decoded, when the
        answer arrives: a set too large to send with every poll
        (:func:`rayinfra.models.feed_filter`); a live collection, such as a dict's keys, leaves
        out what it dropped meanwhile."""
        ...

    def events(
        self, event_types: Sequence[str] | None, since_timestamp: int, after_seq: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """``{event_type, resource_id, data, timestamp, seq}``: the past after ``after_seq``
        (a resumed stream: the ``seq`` of the last event received), else from
        ``since_timestamp`` (inclusive; 0: none), then live events, until the caller stops."""
        ...

    async def metrics(self) -> dict[str, float]:
        """Every metric of the runtime, by Prometheus series name."""
        ...

    async def runtime_status(self, services: Sequence[str]) -> dict[str, Any]:
        """The runtime at a glance (what ``rayinfra status --json`` prints): keys ``running``,
        ``ray``, ``actors``, ``classes``, ``gateway``, ``services`` (only ``services`` when
        named; ``InvalidArgumentError`` for an unknown one), ``dashboard_url``."""
        ...

    async def health(self) -> dict[str, Any]:
        """``{healthy, version, services: {name: state}}`` (control actors and selected
        services)."""
        ...

    # ------------------------------------------------------------------ workflows
    async def create_workflow(self, spec: Mapping[str, Any], workflow_id: str) -> dict[str, Any]:
        """Validate and store a workflow (a new version when ``workflow_id`` exists; ``""``:
        its spec's id, or a new one); the saved workflow. ``InvalidArgumentError`` names the
        path of what is wrong (``nodes[2].task.class``)."""
        ...

    async def start_workflow_run(
        self, workflow_id: str, idempotency_key: str, run_input: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Start a run: its record. The same ``idempotency_key`` returns the run it started."""
        ...

    async def get_workflow_run(self, run_id: str) -> dict[str, Any]:
        """A run's record (``WorkflowRunNotFoundError`` for an unknown id)."""
        ...

    async def list_workflows(self) -> list[dict[str, Any]]:
        """Every workflow, newest first, without nodes and edges (their counts instead)."""
        ...

    async def list_workflow_runs(self, workflow_id: str, limit: int) -> list[dict[str, Any]]:
        """The runs of a workflow, newest first (``WorkflowNotFoundError`` if it is unknown)."""
        ...

    async def cancel_workflow_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a run (its running tasks are cancelled); its record."""
        ...

    def workflow_status(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """``{run_id, status, current_step, steps_completed, total_steps, output, error}`` now,
        then at every change of the run, until it has finished (``status``: pending, running,
        completed, failed, cancelled)."""
        ...

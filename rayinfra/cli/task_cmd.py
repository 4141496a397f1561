"""``rayinfra submit`` and ``rayinfra task status|cancel|list|purge``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rayinfra.cli import remote
from rayinfra.cli.common import (
    EXIT_FAILURE,
    ConfigOption,
    StateDirOption,
    console,
    json_object,
    print_json,
)
from rayinfra.scheduling.tasks import TASK_STATES

app = typer.Typer(help="Inspect and control tasks.", no_args_is_help=True)


def submit(
    payload: str = typer.Argument(
        ..., help="Task payload: a JSON object, or - to read it from stdin."
    ),
    task_id: str | None = typer.Option(
        None,
        "--id",
        help="Task id (default: generated). Resubmitting the same id and spec is a no-op.",
    ),
    task_class: str = typer.Option(
        "cpu_short",
        "--class",
        help="Task class (cpu_short, cpu_long, gpu_short, gpu_long, gpu_slurm; gpu = gpu_short).",
    ),
    priority: int = typer.Option(0, "--priority", help="Higher runs first."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Seconds (default: the class's timeout)."
    ),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="Wait for the task to finish and print its result; exit 1 if it failed.",
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Submit one task. Prints its id (or, with --wait, its final status as JSON)."""
    body = json_object(sys.stdin.read() if payload == "-" else payload, "PAYLOAD")
    with remote.session_for(config, state_dir) as infra:
        res = infra.submit_task(
            task_id=task_id,
            payload=body,
            task_class=task_class,
            priority=priority,
            timeout_s=timeout,
        )
        if not wait:
            console.print(res["task_id"])
            return
        st = infra.wait_task(res["task_id"])
        print_json(st)
    if st["status"] != "completed":
        raise typer.Exit(EXIT_FAILURE)


@app.command("status")
def status(
    task_id: str = typer.Argument(..., help="Task id."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Print a task's status as JSON (exit 1 if unknown)."""
    with remote.session_for(config, state_dir) as infra:
        print_json(infra.get_task_status(task_id))


@app.command("cancel")
def cancel(
    task_id: str = typer.Argument(..., help="Task id."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Cancel a pending or running task (a shell task's whole process group is killed)."""
    with remote.session_for(config, state_dir) as infra:
        print_json(infra.cancel_task(task_id))


def _check_status(value: str | None) -> str | None:
    if value is not None and value not in TASK_STATES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(TASK_STATES)}")
    return value


@app.command("list")
def list_(
    state: str | None = typer.Option(
        None,
        "--status",
        callback=_check_status,
        help=f"Only tasks in this state ({', '.join(TASK_STATES)}).",
    ),
    task_class: str | None = typer.Option(None, "--class", help="Only this class."),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, help="Tasks per page."),
    after: str | None = typer.Option(
        None,
        "--after",
        help="The page after this cursor (the `next:` a previous page printed).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the page's tasks as a JSON list (the next cursor on stderr)."
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """List the newest tasks, a page at a time: when there are more, the last line (on stderr)
    is the cursor of the next page: `next: CURSOR`, pass it as --after."""
    with remote.session_for(config, state_dir) as infra:
        page: dict[str, Any] = infra.list_tasks_page(state, task_class, limit, after)
    rows: list[dict[str, Any]] = page["tasks"]
    if as_json:
        print_json(rows)
    else:
        table = Table("task id", "status", "attempts", "ms", "error", box=None)
        for r in rows:
            table.add_row(
                r["task_id"],
                r["status"],
                str(r["attempts"]),
                f"{r['duration_ms']:.1f}",
                r["error"][:60],
            )
        console.print(table)
    if page["next"]:
        print(f"next: {page['next']}", file=sys.stderr)


@app.command("purge")
def purge(
    older_than: float | None = typer.Option(
        None, "--older-than", min=0, help="Seconds (default: RAYINFRA_RESULT_TTL_S)."
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Delete finished tasks and events older than the retention period."""
    with remote.session_for(config, state_dir) as infra:
        print_json(infra.purge_tasks(older_than))

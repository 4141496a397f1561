"""``rayinfra workflow create|run|status|watch|list|cancel``: workflows through the gateway."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from rayinfra.cli import remote
from rayinfra.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigOption,
    StateDirOption,
    console,
    fail,
    json_object,
    print_json,
)

app = typer.Typer(help="Define, run and watch workflows (docs/workflows.md).", no_args_is_help=True)

STEP_STYLE = {
    "succeeded": "green",
    "running": "yellow",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "magenta",
}


def _json_arg(text: str, what: str) -> dict[str, Any]:
    """A JSON object from the command line (``-``: stdin, ``@FILE``: a file)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            fail(f"{what}: {e}", EXIT_USAGE)
    return json_object(text, what)


def steps_table(run: dict[str, Any]) -> Table:
    """One row per step: its status, attempts, task and error."""
    title = f"{run['id']}  {run['workflow_name']}  [bold]{run['status']}[/]"
    table = Table("step", "type", "status", "attempts", "task", "error", title=title, box=None)
    for s in run["steps"]:
        style = STEP_STYLE.get(s["status"], "")
        status = f"[{style}]{s['status']}[/]" if style else s["status"]
        table.add_row(
            s["node_id"],
            s["type"],
            status,
            str(s["attempts"]),
            s.get("task_id", ""),
            (s.get("error") or "")[:60],
        )
    return table


def _watch(infra: Any, run_id: str, as_json: bool) -> dict[str, Any]:
    """Follow a run until it ends (a live per-step view, or one JSON line per change)."""
    if as_json:
        for p in infra.stream_workflow_status(run_id):
            sys.stdout.write(json.dumps(p) + "\n")
            sys.stdout.flush()
        return dict(infra.get_workflow_run(run_id))
    run = infra.get_workflow_run(run_id)
    with Live(steps_table(run), console=console, auto_refresh=False) as live:
        for _ in infra.stream_workflow_status(run_id):
            run = infra.get_workflow_run(run_id)
            live.update(steps_table(run), refresh=True)
    return dict(run)


def _exit_for(run: dict[str, Any]) -> None:
    if run["status"] != "succeeded":
        raise typer.Exit(EXIT_FAILURE)


@app.command("create")
def create(
    spec: str = typer.Argument(..., help="The workflow: a JSON file, or - for stdin."),
    workflow_id: str | None = typer.Option(
        None,
        "--id",
        help="Its id (default: the spec's, else generated); an existing id: a new version.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the saved workflow."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Validate and store a workflow; prints its id (errors name the path: exit 2)."""
    body = _json_arg(spec if spec == "-" else f"@{spec}", "SPEC")
    with remote.session_for(config, state_dir) as infra:
        saved = infra.create_workflow(body, workflow_id)
    if as_json:
        print_json(saved)
    else:
        console.print(saved["id"])


@app.command("run")
def run(
    workflow_id: str = typer.Argument(..., help="The workflow's id."),
    run_input: str = typer.Option(
        "{}", "--input", help="The run's input: a JSON object, @FILE or - (stdin)."
    ),
    key: str = typer.Option(
        "", "--key", help="Idempotency key: the same key returns the run it started before."
    ),
    watch: bool = typer.Option(False, "--watch", help="Follow it; exit 1 unless it succeeds."),
    as_json: bool = typer.Option(False, "--json", help="Print the record (with --watch: lines)."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Start a run; prints its id (or, with --watch, follows it to the end)."""
    data = _json_arg(run_input, "--input")
    with remote.session_for(config, state_dir) as infra:
        record = infra.start_workflow_run(workflow_id, data, idempotency_key=key)
        if watch:
            final = _watch(infra, record["id"], as_json)
    if not watch:
        if as_json:
            print_json(record)
        else:
            console.print(record["id"] + ("  (reused)" if record.get("reused") else ""))
        return
    if not as_json:
        console.print(f"{final['id']}: {final['status']}")
    _exit_for(final)


@app.command("status")
def status(
    run_id: str = typer.Argument(..., help="The run's id."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Show a run: its steps, their status, attempts, tasks and errors."""
    with remote.session_for(config, state_dir) as infra:
        record = infra.get_workflow_run(run_id)
    if as_json:
        print_json(record)
    else:
        console.print(steps_table(record))
        if record.get("error"):
            console.print(f"[red]{record['error']}[/]")


@app.command("watch")
def watch_(
    run_id: str = typer.Argument(..., help="The run's id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per change."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Follow a run, live, until it ends; exit 1 unless it succeeded."""
    with remote.session_for(config, state_dir) as infra:
        final = _watch(infra, run_id, as_json)
    _exit_for(final)


@app.command("list")
def list_(
    workflow_id: str | None = typer.Argument(
        None, help="A workflow's id: list its runs (default: list the workflows)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, help="Runs to list."),
    as_json: bool = typer.Option(False, "--json"),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """List the workflows, or one workflow's runs (newest first)."""
    with remote.session_for(config, state_dir) as infra:
        rows = (
            infra.list_workflow_runs(workflow_id, limit) if workflow_id else infra.list_workflows()
        )
    if as_json:
        print_json(rows)
        return
    if workflow_id:
        table = Table("run id", "status", "steps", "created", "error", box=None)
        for r in rows:
            done = sum(1 for s in r["steps"] if s["status"] == "succeeded")
            table.add_row(
                r["id"], r["status"], f"{done}/{len(r['steps'])}", r["created_at"],
                (r.get("error") or "")[:60],
            )  # fmt: skip
    else:
        table = Table("workflow id", "name", "nodes", "updated", box=None)
        for w in rows:
            table.add_row(w["id"], w["name"], str(w["node_count"]), w.get("updated_at", ""))
    console.print(table)


@app.command("cancel")
def cancel(
    run_id: str = typer.Argument(..., help="The run's id."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Cancel a run: its running steps' tasks are cancelled, the rest never start."""
    with remote.session_for(config, state_dir) as infra:
        print_json(infra.cancel_workflow_run(run_id))

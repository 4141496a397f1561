"""``dspy-agent``: the original CLI's commands and flags, on top of rayinfra.

The original Python client runs ``dspy-agent start`` with a blocking ``subprocess.run`` and then
dials the gateway, so ``start`` returns once the runtime (and the selected services) are ready,
with or without ``--daemon``. Everything the original only logged works: ``--services`` selects
services (dependencies pulled in), ``--gpu`` requires a GPU, ``logs`` streams, ``stop --force``
kills what does not stop in time.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rayinfra.cli import config_cmd, runtime_cmd, services_cmd
from rayinfra.cli.common import ConfigOption, StateDirOption, console, root_app, run

app = root_app(
    "dspy-agent (compatible with the original CLI), backed by rayinfra.", "dspy-agent (rayinfra)"
)
app.add_typer(config_cmd.app, name="config")

ICONS = {"running": "🟢", "starting": "🟡", "stopped": "🔴", "unhealthy": "🟠"}


@app.command("start")
def start(
    workspace: Path = typer.Option(Path(), "--workspace", help="Workspace directory."),
    gpu: bool = typer.Option(False, "--gpu", help="Require a GPU (exit 1 if none)."),
    services: str | None = typer.Option(
        None, "--services", help="Comma-separated services to start (default: the selection)."
    ),
    daemon: bool = typer.Option(
        False, "--daemon", help="Accepted for compatibility: start always returns once ready."
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Start the runtime and the selected services; return once they are ready."""
    if not workspace.is_dir():
        console.print(f"[red]error:[/] --workspace {workspace} is not a directory")
        raise typer.Exit(2)
    runtime_cmd.start(
        address=None,
        gpu=gpu,
        daemon=True,
        profile=None,
        services=services,
        token_file=None,
        config=config,
        state_dir=state_dir,
    )


@app.command("stop")
def stop(
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds to wait."),
    force: bool = typer.Option(False, "--force", help="SIGKILL what does not stop in time."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Drain running tasks (unless --force), stop the services and the runtime."""
    runtime_cmd.stop(
        force=force,
        timeout=timeout,
        keep_services=False,
        drain_timeout=None,
        config=config,
        state_dir=state_dir,
    )


@app.command("status")
def status(
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """A table of services (exit 0 with "Services not running" when nothing runs)."""
    st = runtime_cmd.runtime_status(config, state_dir)
    if not st["ray"]["running"]:
        console.print("Services not running")
        return
    for name, row in st["services"].items():
        icon = ICONS.get(row["status"], "⚪")
        console.print(f"{icon} {name:<22} {row['status']:<10} {row['container_id'][:12]}")


@app.command("logs")
def logs(
    service: str = typer.Option(..., "--service", help="Service name (or scheduler, gateway...)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(100, "--tail", "-n", min=0, help="Last N lines (0 = all)."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Print a service's log lines."""
    services_cmd.logs(
        service=service,
        follow=follow,
        tail=tail or None,
        since=None,
        as_json=False,
        config=config,
        state_dir=state_dir,
    )


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()

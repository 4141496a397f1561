"""The ``rayinfra`` command: one sub-app (or command) per capability, registered here."""

from __future__ import annotations

from rayinfra.cli import (
    config_cmd,
    events_cmd,
    hardware_cmd,
    runtime_cmd,
    services_cmd,
    slurm_cmd,
    task_cmd,
    workflow_cmd,
)
from rayinfra.cli.common import root_app, run

app = root_app("rayinfra: services, adaptive task scheduling and Slurm on Ray.", "rayinfra")
app.command("start")(runtime_cmd.start)
app.command("stop")(runtime_cmd.stop)
app.command("join")(runtime_cmd.join)
app.command("status")(runtime_cmd.status)
app.command("hardware")(hardware_cmd.hardware_cmd)
app.command("submit")(task_cmd.submit)
app.add_typer(task_cmd.app, name="task")
app.add_typer(config_cmd.app, name="config")
app.add_typer(services_cmd.app, name="services")
app.add_typer(slurm_cmd.app, name="slurm")
app.add_typer(events_cmd.app, name="events")
app.add_typer(workflow_cmd.app, name="workflow")
app.command("logs")(services_cmd.logs)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()

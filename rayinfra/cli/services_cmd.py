"""``rayinfra services start|stop|restart|status|pull|prune`` and ``rayinfra logs``.

Every command is a gRPC client of the running runtime's gateway (``env_manager.v1``, through
:class:`~rayinfra.client.services.ServicesClient`; ``status``: the orchestrator's
GetRuntimeStatus), never a Ray driver, and never starts a runtime. ``start`` shows a live
progress bar per service and a final table; it exits 1 only when a required service failed,
was unhealthy or was blocked.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from rayinfra.cli import remote
from rayinfra.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigOption,
    StateDirOption,
    console,
    dial,
    err_console,
    fail,
    load,
    print_json,
)
from rayinfra.config_sources import DialSettings, as_dial
from rayinfra.errors import InvalidArgumentError

if TYPE_CHECKING:
    from rayinfra.client.services import ServicesClient
    from rayinfra.config import RayinfraConfig

app = typer.Typer(help="Start, stop and inspect services.", no_args_is_help=True)

#: final statuses of a start that fail it when the service is required
START_FAILED = ("failed", "unhealthy", "blocked")
FINAL_STYLE = {
    "healthy": "green",
    "running": "green",
    "starting": "yellow",
    "unhealthy": "red",
    "failed": "red",
    "blocked": "red",
    "stopped": "dim",
    "orphaned": "yellow",
}


@contextlib.contextmanager
def env_manager(
    cfg: RayinfraConfig | DialSettings, connect_timeout_s: float | None = None
) -> Iterator[ServicesClient]:
    """The runtime's env manager over gRPC (through its gateway; never a Ray driver). Not
    running or not answering: exit 1; bad input: exit 2 naming the field and its choices;
    any other request error: exit 1 with its cause."""
    from rayinfra.client.services import ServicesClient

    settings = as_dial(cfg)
    if remote.gateway_addr(settings) is None:
        fail(f"rayinfra is not running (state dir {settings.state_dir}); run `rayinfra start`")
    if not settings.gateway_enabled:
        fail("services are managed through the gateway, and gateway.enabled is false")
    try:
        client = ServicesClient.from_config(settings, connect_timeout_s)
    except ConnectionError as e:
        fail(f"{e}: is the runtime still running?")
    except RuntimeError as e:  # an unreadable TLS CA file
        fail(str(e))
    try:
        yield client
    except (typer.Exit, typer.Abort):
        raise
    except InvalidArgumentError as e:
        fail(str(e), EXIT_USAGE)
    except (LookupError, RuntimeError) as e:
        fail(str(e))
    finally:
        client.close()


def split_names(names: list[str], services: str | None) -> list[str]:
    """Positional names plus the original CLI's ``--services a,b``."""
    out = list(names)
    if services:
        out += [s.strip() for s in services.split(",") if s.strip()]
    return out


def parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: expected SERVICE.FIELD=JSON (e.g. redis.env.X=1)", EXIT_USAGE)
        out[key] = value
    return out


def run_start(
    client: ServicesClient, names: list[str], parallel: bool, overrides: dict[str, str]
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Start services, rendering progress; returns (no required service failed, final updates)."""
    from rich.progress import BarColumn, Progress, TextColumn

    final: dict[str, dict[str, Any]] = {}
    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.fields[name]:<22}"),
        BarColumn(),
        TextColumn("{task.fields[status]:<10} {task.fields[message]}"),
        console=console,
        transient=False,
    ) as progress:
        for u in client.start(names, parallel, overrides):
            name = u["service_name"]
            if name not in bars:
                bars[name] = progress.add_task("", total=100, name=name, status="", message="")
            progress.update(
                bars[name], completed=u["progress"], status=u["status"], message=u["message"][:80]
            )
            if u["progress"] >= 100:
                final[name] = u
    ok = not any(u["required"] and u["status"] in START_FAILED for u in final.values())
    return ok, final


def final_table(final: dict[str, dict[str, Any]]) -> Table:
    table = Table("service", "status", "message", title="services", title_justify="left")
    for name, u in final.items():
        style = FINAL_STYLE.get(u["status"], "")
        table.add_row(name, f"[{style}]{u['status']}[/]" if style else u["status"], u["message"])
    return table


@app.command("start")
def start(
    names: list[str] = typer.Argument(None, help="Services to start (default: the selection)."),
    services: str | None = typer.Option(
        None, "--services", help="Comma-separated services (the original CLI's spelling)."
    ),
    all_services: bool = typer.Option(False, "--all", help="Start every service of the catalog."),
    sets: list[str] = typer.Option(
        [], "--set", help="Per-call override SERVICE.FIELD=JSON (repeatable)."
    ),
    sequential: bool = typer.Option(False, "--sequential", help="One service at a time."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Start services (and what they depend on); exit 1 if a required one fails."""
    wanted = split_names(names or [], services)
    settings: RayinfraConfig | DialSettings
    if wanted or all_services:  # the gateway's address is all it needs: no typed config
        settings = dial(config, state_dir)
    else:  # the configured selection
        settings = load(config, state_dir).config
        wanted = list(settings.services.selected)
        if not wanted:
            fail(
                "no services selected: name them, use --services a,b, --all, or set "
                "services.selected in the config",
                EXIT_USAGE,
            )
    with env_manager(settings) as client:
        ok, final = run_start(client, wanted, not sequential, parse_overrides(sets))
    console.print(final_table(final))
    raise typer.Exit(0 if ok else EXIT_FAILURE)


@app.command("stop")
def stop(
    names: list[str] = typer.Argument(None, help="Services to stop (default: all running)."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.0, help="Seconds before SIGKILL."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Stop services, dependants first; exit 1 if any stop failed."""
    with env_manager(dial(config, state_dir)) as client:
        report_stops(client.stop(names or [], timeout))


def report_stops(results: dict[str, str]) -> None:
    """Print ``name -> stop result``; exit 1 if any stop failed."""
    table = Table("service", "result", title="stopped", title_justify="left")
    for name, res in results.items():
        table.add_row(name, res)
    console.print(table)
    raise typer.Exit(EXIT_FAILURE if any(r.startswith("error") for r in results.values()) else 0)


@app.command("prune")
def prune(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.0, help="Seconds before SIGKILL."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Stop and forget orphaned services (started under an earlier config, not in this one)."""
    with env_manager(dial(config, state_dir)) as client:
        orphans = [
            f"{n} ({row['container_id']})"
            for n, row in client.status().items()
            if row["status"] == "orphaned"
        ]
        if not orphans:
            console.print("no orphaned services")
            return
        if not yes:
            typer.confirm(f"stop and remove {', '.join(orphans)}?", abort=True)
        report_stops(client.prune(timeout))


@app.command("restart")
def restart(
    name: str = typer.Argument(..., help="The service to restart."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.0, help="Seconds before SIGKILL."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Stop and start one service."""
    with env_manager(dial(config, state_dir)) as client:
        ok, message = client.restart(name, timeout)
    (console if ok else err_console).print(message)
    raise typer.Exit(0 if ok else EXIT_FAILURE)


@app.command("status")
def status(
    names: list[str] = typer.Argument(None, help="Services to show (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Status, ports, health and resource use of each service (asked of the gateway: no Ray
    driver). Exit 1 if the runtime is not running."""
    from rayinfra.cli.runtime_cmd import runtime_status

    st = runtime_status(config, state_dir, names or [])
    if not st["ray"]["running"]:
        fail(f"rayinfra is not running (state dir {st['ray'].get('state_dir')})", EXIT_FAILURE)
    if as_json:
        print_json(st["services"])
        return
    console.print(status_table(st["services"]))


def status_table(rows: dict[str, dict[str, Any]], title: str | None = None) -> Table:
    """One row per service: status, driver, ports, CPU and memory use, health message."""
    table = Table(
        "service", "status", "driver", "ports", "cpu %", "memory", "message",
        title=title, title_justify="left",
    )  # fmt: skip
    for name, row in rows.items():
        usage = (row.get("health") or {}).get("resource_usage") or {}
        style = FINAL_STYLE.get(row["status"], "")
        table.add_row(
            name,
            f"[{style}]{row['status']}[/]" if style else row["status"],
            row["driver"],
            ",".join(str(p) for p in row["ports"]),
            f"{usage['cpu_percent']:.1f}" if usage else "-",
            _bytes(usage.get("memory_bytes")) if usage else "-",
            (row.get("health") or {}).get("message") or row.get("message", ""),
        )
    return table


@app.command("pull")
def pull(
    images: list[str] = typer.Argument(None, help="Images (default: the catalog's)."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Pull images with byte progress; exit 1 if any pull failed."""
    from rich.progress import BarColumn, Progress, TextColumn

    bars: dict[str, Any] = {}
    failed: list[str] = []
    with (
        env_manager(dial(config, state_dir)) as client,
        Progress(
            TextColumn("{task.fields[name]:<40}"),
            BarColumn(),
            TextColumn("{task.fields[status]:<12} {task.fields[detail]}"),
            console=console,
        ) as progress,
    ):
        for u in client.pull(images or []):
            name = u["image_name"]
            if name not in bars:
                bars[name] = progress.add_task("", total=100, name=name, status="", detail="")
            detail = f"{_bytes(u['current'])} / {_bytes(u['total'])}" if u["total"] else ""
            if u["status"] == "error":
                detail = u["message"][:100]
                failed.append(name)
            progress.update(
                bars[name], completed=u["progress_percent"], status=u["status"], detail=detail
            )
    for name in failed:
        err_console.print(f"[red]pull failed:[/] {name}")
    raise typer.Exit(EXIT_FAILURE if failed else 0)


def _bytes(n: int | None) -> str:
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_since(text: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``--since``: unix seconds, an ISO time, or a duration like ``10m``/``2h``/``30s``."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now() - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r}: expected unix seconds, an ISO time or 10s/5m/2h/1d", EXIT_USAGE)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def logs(
    service: str = typer.Argument(..., help="Service name."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int | None = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines."),
    since: str | None = typer.Option(None, "--since", help="Unix seconds, ISO time or 10m."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Print a service's log lines, each with its own timestamp.

    SERVICE may also be a runtime component (scheduler, service_registry, health_checker,
    gateway, executor-<class>-<n>): the gateway reads its lines from Ray's session logs.
    """
    since_ts = parse_since(since)
    interrupted = _on_sigint()
    with env_manager(dial(config, state_dir)) as client, contextlib.suppress(KeyboardInterrupt):
        for ln in _until_interrupted(client.logs(service, follow, tail, since_ts), interrupted):
            if as_json:
                typer.echo(json.dumps(ln, sort_keys=True))
            elif not ln["timestamp"]:  # a runtime actor's line: Ray's timestamp is in its text
                typer.echo(ln["message"])
            else:
                ts = datetime.fromtimestamp(ln["timestamp"], timezone.utc).isoformat(
                    timespec="milliseconds"
                )
                typer.echo(f"{ts} {ln['stream']:<6} {ln['message']}")


def _on_sigint() -> threading.Event:
    """Set when the user presses Ctrl-C (which still raises KeyboardInterrupt as usual)."""
    pressed = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        pressed.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
    return pressed


def _until_interrupted(
    lines: Iterator[dict[str, Any]], interrupted: threading.Event
) -> Iterator[dict[str, Any]]:
    """``lines`` until they end or the user interrupts: an error the stream raises once Ctrl-C
    was pressed (gRPC may see its call torn down before Python sees the signal) is the
    interruption itself, not a failure."""
    try:
        yield from lines
    except Exception:
        if not interrupted.is_set():
            raise

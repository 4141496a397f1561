"""``rayinfra services start|stop|restart|status|pull`` and ``rayinfra logs``.

Every command talks to the ``service_registry`` actor of a running runtime (it never starts
one). ``start`` shows a live progress bar per service and a final table; it exits 1 only when
a required service failed, was unhealthy or was blocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from rayinfra import raywrap, runtime
from rayinfra.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigOption,
    StateDirOption,
    console,
    err_console,
    fail,
    load,
    print_json,
)
from rayinfra.config import RayinfraConfig
from rayinfra.errors import InvalidArgument

app = typer.Typer(help="Start, stop and inspect services.", no_args_is_help=True)

REGISTRY = "service_registry"
FINAL_STYLE = {
    "healthy": "green",
    "running": "green",
    "starting": "yellow",
    "unhealthy": "red",
    "failed": "red",
    "blocked": "red",
    "stopped": "dim",
}


def registry(cfg: RayinfraConfig) -> Any:
    """The registry's handle (connecting this process to the runtime); exit 1 if not running."""
    if runtime.recorded(cfg.state.dir) is None:
        fail(f"rayinfra is not running (state dir {cfg.state.dir}); run `rayinfra start`")
    try:
        runtime.connect(cfg.state.dir)
    except runtime.RuntimeFailure as e:
        fail(str(e))
    handle = raywrap.get_actor(REGISTRY)
    if handle is None:
        fail("the service_registry actor is not running; `rayinfra start` creates it")
    return handle


def call(handle: Any, method: str, *args: Any, timeout_s: float = 120.0) -> Any:
    """Call a registry method; its bad-input errors exit 2, others exit 1."""
    try:
        return raywrap.invoke(handle, method, *args, timeout_s=timeout_s)
    except InvalidArgument as e:
        fail(str(e), EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 - mapped to an exit code with the cause
        fail(f"{type(e).__name__}: {e}")


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
    handle: Any,
    names: list[str],
    parallel: bool,
    overrides: dict[str, str],
    *,
    show: bool = True,
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Start services, rendering progress; returns (no required service failed, final updates)."""
    op_id = call(handle, "start", names, parallel, overrides)
    final: dict[str, dict[str, Any]] = {}
    bars: dict[str, Any] = {}
    seq = 0
    done = False
    with Progress(
        TextColumn("{task.fields[name]:<22}"),
        BarColumn(),
        TextColumn("{task.fields[status]:<10} {task.fields[message]}"),
        console=console,
        disable=not show,
        transient=False,
    ) as progress:
        while not done:
            seq, updates, done = call(handle, "op_updates", op_id, seq, 10.0)
            for u in updates:
                name = u["service_name"]
                if name not in bars:
                    bars[name] = progress.add_task("", total=100, name=name, status="", message="")
                progress.update(
                    bars[name],
                    completed=u["progress"],
                    status=u["status"],
                    message=u["message"][:80],
                )
                if u["progress"] >= 100:
                    final[name] = u
    status = call(handle, "status", list(final))
    ok = True
    for name, u in final.items():
        if status.get(name, {}).get("required") and u["status"] in (
            "failed",
            "unhealthy",
            "blocked",
        ):
            ok = False
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
    cfg = load(config, state_dir).config
    wanted = split_names(names or [], services) or ([] if all_services else cfg.services.selected)
    if not wanted and not all_services:
        fail(
            "no services selected: name them, use --services a,b, --all, or set "
            "services.selected in the config",
            EXIT_USAGE,
        )
    handle = registry(cfg)
    ok, final = run_start(handle, wanted, not sequential, parse_overrides(sets))
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
    cfg = load(config, state_dir).config
    results: dict[str, str] = call(registry(cfg), "stop", names or [], timeout)
    table = Table("service", "result", title="stopped", title_justify="left")
    for name, res in results.items():
        table.add_row(name, res)
    console.print(table)
    raise typer.Exit(EXIT_FAILURE if any(r.startswith("error") for r in results.values()) else 0)


@app.command("restart")
def restart(
    name: str = typer.Argument(..., help="The service to restart."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.0, help="Seconds before SIGKILL."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Stop and start one service."""
    cfg = load(config, state_dir).config
    ok, message = call(registry(cfg), "restart", name, timeout)
    (console if ok else err_console).print(message)
    raise typer.Exit(0 if ok else EXIT_FAILURE)


@app.command("status")
def status(
    names: list[str] = typer.Argument(None, help="Services to show (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Status, ports, health and resource use of each service."""
    cfg = load(config, state_dir).config
    st: dict[str, dict[str, Any]] = call(registry(cfg), "status", names or [])
    if as_json:
        print_json(st)
        return
    table = Table("service", "status", "driver", "ports", "cpu %", "memory", "message")
    for name, row in st.items():
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
    console.print(table)


@app.command("pull")
def pull(
    images: list[str] = typer.Argument(None, help="Images (default: the catalog's)."),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Pull images with byte progress; exit 1 if any pull failed."""
    cfg = load(config, state_dir).config
    handle = registry(cfg)
    op_id = call(handle, "pull", images or [])
    bars: dict[str, Any] = {}
    failed: list[str] = []
    seq, done = 0, False
    with Progress(
        TextColumn("{task.fields[name]:<40}"),
        BarColumn(),
        TextColumn("{task.fields[status]:<12} {task.fields[detail]}"),
        console=console,
    ) as progress:
        while not done:
            seq, updates, done = call(handle, "op_updates", op_id, seq, 10.0)
            for u in updates:
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


COMPONENTS = ("scheduler", "service_registry", "health_checker", "gateway")


def component_logs(cfg: RayinfraConfig, name: str, follow: bool, tail: int | None) -> None:
    """A runtime component's log (its actor's stderr, where Python logging goes)."""
    if runtime.recorded(cfg.state.dir) is None:
        fail(f"rayinfra is not running (state dir {cfg.state.dir})")
    info = runtime.connect(cfg.state.dir)
    try:
        for line in raywrap.actor_log(
            info.gcs_address, name, tail=-1 if tail is None else tail, follow=follow
        ):
            typer.echo(line)
    except LookupError as e:
        fail(str(e), EXIT_USAGE)
    except KeyboardInterrupt:
        pass


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
    gateway, executor-<class>-<n>): its lines come from Ray's session logs.
    """
    cfg = load(config, state_dir).config
    if service in COMPONENTS or service.startswith("executor-"):
        component_logs(cfg, service, follow, tail)
        return
    handle = registry(cfg)
    sid = call(handle, "open_logs", service, follow, tail, parse_since(since))
    try:
        done = False
        while not done:
            lines, done = call(handle, "read_logs", sid, 5.0)
            for ln in lines:
                if as_json:
                    typer.echo(json.dumps(ln, sort_keys=True))
                else:
                    ts = datetime.fromtimestamp(ln["timestamp"], timezone.utc).isoformat(
                        timespec="milliseconds"
                    )
                    typer.echo(f"{ts} {ln['stream']:<6} {ln['message']}")
    except KeyboardInterrupt:
        pass
    finally:
        raywrap.invoke(handle, "close_logs", sid, timeout_s=10.0)

"""``rayinfra start|stop|status``: the runtime's lifecycle.

``start`` and ``stop`` are Ray drivers (they launch or stop the head, create or remove the
control actors); ``status`` asks the gateway. The driver's modules are imported inside the
commands that need them, so every other command starts fast.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from rayinfra.cli import remote, services_cmd
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
from rayinfra.connection import pid_alive, recorded

if TYPE_CHECKING:
    from rayinfra.runtime import StartReport

STATUS_REFRESH_S = 2.0


def status_tables(st: dict[str, Any]) -> list[Table]:
    """``rayinfra status``: actors (with nodes and the dashboard), gateway servers, task classes,
    services."""
    tables = [_health_table(st.get("health") or {}), _actor_table(st)]
    if nodes := st["ray"].get("nodes"):
        tables.append(_node_table(nodes, st.get("classes", {})))
    if st.get("gateway"):
        servers = Table("server", "state", box=None, title="gateway", title_justify="left")
        for name, state in st["gateway"].items():
            colour = "green" if state.startswith("serving") else "red"
            servers.add_row(name, f"[{colour}]{state}[/]")
        tables.append(servers)
    classes = Table(
        "class",
        "CPU",
        "GPU",
        "timeout s",
        "limit",
        "pending",
        "running",
        "limit now",
        box=None,
        title="task classes",
        title_justify="left",
    )
    for name, c in st["classes"].items():
        live = c.get("live", {})
        classes.add_row(
            name,
            f"{c['num_cpus']:g}",
            f"{c['num_gpus']:g}",
            str(c["timeout_s"] or "-"),
            f"{c['limit'][0]}-{c['limit'][1]}",
            str(live.get("pending", "-")),
            str(live.get("inflight", "-")),
            str(live.get("limit", "-")),
        )
    tables.append(classes)
    if st.get("services"):
        tables.append(services_cmd.status_table(st["services"], title="services"))
    return tables


def _health_table(health: dict[str, Any]) -> Table:
    """One line: healthy, degraded (what is down without stopping tasks) or unhealthy."""
    summary = str(health.get("summary", "unknown"))
    colour = "green" if summary == "healthy" else "yellow" if health.get("healthy") else "red"
    table = Table(box=None, show_header=False, title="health", title_justify="left")
    table.add_row(f"[{colour}]{summary}[/]")
    return table


def _node_table(nodes: list[dict[str, Any]], classes: dict[str, Any]) -> Table:
    """One row per alive node: address, CPUs, GPUs, the executors placed there, its labels."""
    placed: dict[str, list[str]] = {}
    for c in classes.values():
        for executor, node_id in c.get("live", {}).get("executors", {}).items():
            placed.setdefault(node_id, []).append(executor.removeprefix("executor-"))
    table = Table(
        "node",
        "address",
        "CPU",
        "GPU",
        "executors",
        "labels",
        box=None,
        title="nodes",
        title_justify="left",
    )
    for n in nodes:
        res, labels = n.get("resources", {}), n.get("labels", {})
        table.add_row(
            n["node_id"][:8],
            n.get("address", "-"),
            f"{res.get('CPU', 0):g}",
            f"{res.get('GPU', 0):g}",
            ", ".join(sorted(placed.get(n["node_id"], []))) or "-",
            " ".join(f"{k.removeprefix('rayinfra.io/')}={v}" for k, v in sorted(labels.items())),
        )
    return table


def _actor_table(st: dict[str, Any]) -> Table:
    ray_info = st["ray"]
    title = (
        f"rayinfra — Ray {ray_info.get('gcs_address', '-')} ({ray_info.get('mode', '-')})"
        if ray_info.get("running")
        else "rayinfra — not running"
    )
    table = Table("actor", "state", "pid", "restarts", title=title, title_justify="left")
    for name, a in st["actors"].items():
        colour = "green" if a.get("state") == "alive" else "red"
        table.add_row(
            name,
            f"[{colour}]{a.get('state')}[/]",
            str(a.get("pid", "-")),
            str(a.get("restarts", "-")),
        )
    if ray_info.get("running"):
        total = ray_info.get("resources_total", {})
        table.caption = (
            f"nodes {len(ray_info.get('nodes', []))}  CPU {total.get('CPU', 0):g}  GPU {total.get('GPU', 0):g}"
            f"  dashboard {st.get('dashboard_url') or '-'}"
        )
    return table


def start(
    address: str | None = typer.Option(
        None,
        "--address",
        help="Join an existing Ray cluster (cluster mode) instead of starting a local head.",
    ),
    gpu: bool = typer.Option(
        False, "--gpu", help="Require a GPU: exit 1 with the probe report if none."
    ),
    daemon: bool = typer.Option(False, "--daemon", "-d", help="Return once the runtime is up."),
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="Service profile (dspy, local); without --services: start all of it.",
    ),
    services: str | None = typer.Option(
        None, "--services", help="Comma-separated services to start (dependencies pulled in)."
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="With --address: the cluster's Ray auth token (default: $RAY_AUTH_TOKEN_PATH; "
        "none with RAY_AUTH_MODE=disabled; else ray.token_path / ray.auth_mode).",
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Start the runtime (local Ray head on 127.0.0.1 + control actors), or report the running one.

    Services start only when selected: --profile, --services, or services.selected in the config.
    Runs as a Ray driver (it launches the head or joins --address, and creates the actors).
    """
    from rayinfra import runtime
    from rayinfra.head import HeadError
    from rayinfra.services.catalog import build_catalog
    from rayinfra.services.graph import closure
    from rayinfra.services.spec import SpecError

    flags: dict[str, Any] = {"services.profile": profile} if profile else {}
    token = token_file or (Path(p) if (p := os.environ.get("RAY_AUTH_TOKEN_PATH")) else None)
    if address is not None and token is not None:  # the cluster's token, as `join` takes it
        flags.update({"ray.auth_mode": "token", "ray.token_path": str(token)})
    elif address is not None and os.environ.get("RAY_AUTH_MODE") == "disabled":
        flags["ray.auth_mode"] = "disabled"  # a cluster without auth, as Ray's own CLI reads it
    elif token_file is not None:
        fail("--token-file goes with --address (a local head makes its own token)", EXIT_USAGE)
    loaded = load(config, state_dir, **flags)
    cfg = loaded.config
    selection = services_cmd.split_names([], services) or list(cfg.services.selected)
    if profile and not services:
        selection = ["*"]
    if selection and selection != ["*"]:
        try:
            closure(build_catalog(cfg.services, cfg.state.dir), selection)
        except SpecError as e:  # before anything starts
            fail(str(e), EXIT_USAGE)
    try:
        report = runtime.start(cfg, address=address, require_gpu=gpu)
    except (runtime.RuntimeFailureError, HeadError) as e:
        fail(str(e), EXIT_FAILURE)
    info = report.info
    if report.already_running:
        console.print(
            f"rayinfra is already running (Ray {info.gcs_address}, state {info.state_dir})"
        )
    else:
        how = "launched local head" if report.launched_head else "joined cluster"
        console.print(f"rayinfra started: {how} at {info.gcs_address}, state dir {info.state_dir}")
    for name, what in report.actors.items():
        console.print(f"  actor {name}: {what}")
    if info.dashboard_url:
        console.print(f"  dashboard: {info.dashboard_url}")
    if selection:
        names = [] if selection == ["*"] else selection
        # the same start as `rayinfra services start`: over gRPC, through the gateway (which
        # a runtime started just now may still be binding: wait as the client would)
        with services_cmd.env_manager(cfg, cfg.client.service_timeout_s) as client:
            ok, final = services_cmd.run_start(client, names, True, {})
        console.print(services_cmd.final_table(final))
        if not ok:
            err_console.print("[red]a required service did not come up[/]")
            if daemon or report.already_running:
                raise typer.Exit(EXIT_FAILURE)
    if daemon or report.already_running:
        raise typer.Exit(0)
    _foreground(cfg.state.dir, report, cfg.ray.stop_timeout_s)


def _foreground(state_dir: Path, report: StartReport, stop_timeout: float) -> None:
    """Show live status until SIGINT/SIGTERM, then stop what this command started."""
    from rich.live import Live

    from rayinfra import runtime

    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    console.print("running in the foreground; Ctrl-C stops it")
    cfg = load(None, state_dir).config
    head_pid = report.info.head_pid
    code = 0
    with Live(
        _actor_table(runtime.status(cfg)),
        console=console,
        auto_refresh=False,
        transient=not console.is_terminal,
    ) as live:
        while not stop_requested.wait(STATUS_REFRESH_S):
            if report.launched_head and not pid_alive(head_pid):
                err_console.print(f"[red]the Ray head (pid {head_pid}) exited[/]")
                code = EXIT_FAILURE
                break
            if console.is_terminal:
                live.update(_actor_table(runtime.status(cfg)), refresh=True)
    console.print("stopping ...")
    try:
        stopped = runtime.stop(state_dir, timeout_s=stop_timeout, force=True)
    except runtime.RuntimeFailureError as e:
        fail(str(e), EXIT_FAILURE)
    console.print(f"stopped (actors removed: {', '.join(stopped.actors_removed) or 'none'})")
    raise typer.Exit(code)


def stop(
    force: bool = typer.Option(
        False, "--force", help="SIGKILL what does not exit in time; skip an unreachable Ray."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", min=0.1, help="Seconds to wait for the head to exit."
    ),
    keep_services: bool = typer.Option(
        False, "--keep-services", help="Leave services running; the next start adopts them."
    ),
    drain_timeout: float | None = typer.Option(
        None,
        "--drain-timeout",
        min=0,
        help="Seconds running tasks get to finish first (default: scheduler.drain_timeout_s); "
        "what still runs is requeued and runs on the next start. --force does not wait.",
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Drain running tasks (unless --force), stop services (unless --keep-services), remove the
    control actors, stop the Ray head.

    Runs as a Ray driver (it removes the actors and signals the head it launched)."""
    from rayinfra import runtime
    from rayinfra.head import describe_pids, stop_worker

    cfg = load(config, state_dir).config
    node, left = stop_worker(cfg.state.dir, timeout_s=timeout, force=force)
    if left:
        fail(f"the worker node still has processes: {describe_pids(left)}; rerun with --force")
    if node is not None:
        console.print(f"worker node {node.node_ip} (joined to {node.head}) stopped")
    if not force and recorded(cfg.state.dir) is not None:
        wait = cfg.scheduler.drain_timeout_s if drain_timeout is None else drain_timeout
        try:
            drained = runtime.drain(cfg.state.dir, timeout_s=wait)
        except runtime.RuntimeFailureError as e:
            fail(str(e), EXIT_FAILURE)
        console.print(
            f"drained: {drained['running']} task(s) were running; "
            f"{drained['requeued']} requeued for the next start"
        )
    if not keep_services and recorded(cfg.state.dir) is not None:
        stopped = runtime.stop_services(cfg.state.dir, timeout_s=cfg.services.stop_timeout_s)
        for name, res in stopped.items():
            console.print(f"  service {name}: {res}")
    try:
        report = runtime.stop(cfg.state.dir, timeout_s=timeout, force=force)
    except runtime.RuntimeFailureError as e:
        if not force:  # it was drained for a stop that did not happen: let it work again
            runtime.resume(cfg.state.dir)
        fail(str(e), EXIT_FAILURE)
    if not report.was_running:
        if node is None:
            console.print(f"rayinfra is not running (state dir {cfg.state.dir})")
        return
    console.print(f"actors removed: {', '.join(report.actors_removed) or 'none'}")
    for name, err in report.actor_errors.items():
        err_console.print(f"[yellow]warning:[/] {name}: {err}")
    console.print(
        "head stopped" if report.head_stopped else "head left running (not launched by rayinfra)"
    )


def parse_labels(items: list[str]) -> dict[str, str]:
    """``join --labels`` (repeatable, each comma-separated ``KEY=VALUE``; ``slurm up`` passes
    its own on to each node's ``join``); a bad item exits 2."""
    out: dict[str, str] = {}
    for item in (part for arg in items for part in arg.split(",") if part.strip()):
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--labels {item!r}: expected KEY=VALUE", EXIT_USAGE)
        out[key.strip()] = value.strip()
    return out


def join(
    head: str = typer.Argument(..., help="HOST:PORT of the cluster's Ray head (its GCS)."),
    node_ip_address: str | None = typer.Option(
        None,
        "--node-ip-address",
        help="This node's IP (default: --interface's, else the address that routes to the head).",
    ),
    interface: str | None = typer.Option(
        None, "--interface", help="Take the node IP from this network interface (e.g. ib0)."
    ),
    labels: list[str] = typer.Option(
        [], "--labels", help="Extra node labels k=v (repeatable or comma-separated)."
    ),
    num_cpus: int | None = typer.Option(None, "--num-cpus", min=0, help="Default: detected."),
    num_gpus: int | None = typer.Option(None, "--num-gpus", min=0, help="Default: detected."),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="The cluster's Ray auth token (default: $RAY_AUTH_TOKEN_PATH; none: no auth).",
    ),
    temp_dir: Path | None = typer.Option(
        None,
        "--temp-dir",
        help="Ray's temp dir for this node (default: a short one per state dir, head and IP).",
    ),
    block: bool = typer.Option(
        False,
        "--block",
        help="Become the node process (exec; for batch scripts and systemd): its signals stop it.",
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Start a Ray worker node on this machine and join it to a cluster, with the detected
    CPUs, GPUs, memory and hardware labels (as the head's) plus --labels.

    Starts a Ray node, not a driver; `rayinfra stop` (same --state-dir) stops it."""
    from rayinfra import hardware
    from rayinfra.head import HeadError, launch_worker, worker_plan

    extra = parse_labels(labels)
    flags = {"ray.num_cpus": num_cpus, "ray.num_gpus": num_gpus}
    cfg = load(config, state_dir, **flags).config
    token = token_file or (Path(p) if (p := os.environ.get("RAY_AUTH_TOKEN_PATH")) else None)
    try:
        plan = worker_plan(
            cfg,
            hardware.detect(),
            head,
            node_ip=node_ip_address,
            interface=interface,
            labels=extra,
            token_path=token,
            temp_dir=temp_dir,
        )
        if block:
            sys.stdout.flush()
            os.execve(plan.argv[0], plan.argv, plan.env)  # noqa: S606 - an argv list, no shell
        node = launch_worker(cfg, plan)
    except ValueError as e:  # an invalid label
        fail(str(e), EXIT_USAGE)
    except HeadError as e:
        fail(str(e), EXIT_FAILURE)
    console.print(f"joined {node.head} as node {node.node_ip} (pid {node.pid}, log {node.log})")


def runtime_status(
    config: Path | None, state_dir: Path | None, services: list[str] | None = None
) -> dict[str, Any]:
    """The runtime's status from its gateway (no Ray driver); not running: the static view."""
    settings = dial(config, state_dir)
    if remote.gateway_addr(settings) is None:
        from rayinfra import runtime

        return runtime.not_running_status(load(config, state_dir).config)
    with remote.session(settings) as infra:
        return infra.runtime_status(services)


def status(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print JSON (keys running, health, ray, actors, classes, gateway, services, "
        "dashboard_url).",
    ),
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
) -> None:
    """Show the runtime: Ray nodes, control actors, gateway addresses, task classes and services
    with their health (asked of the gateway: no Ray driver). Exit 1 if not running."""
    st = runtime_status(config, state_dir)
    if as_json:
        print_json(st)
    else:
        for table in status_tables(st):
            console.print(table)
    sys.stdout.flush()
    if not st["running"]:
        raise typer.Exit(EXIT_FAILURE)

"""Shared CLI plumbing: exit codes, config loading, output helpers."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from rayinfra import json_input
from rayinfra.config_sources import ConfigError, DialSettings, gather

if TYPE_CHECKING:
    from rayinfra.config import LoadedConfig

EXIT_OK = 0
EXIT_FAILURE = 1  # the runtime failed (port busy, head did not start, no GPU, ...)
EXIT_USAGE = 2  # bad input: unknown option value, invalid config

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="rayinfra TOML config file (default: $RAYINFRA_CONFIG, else ~/.rayinfra/config.toml).",
    show_default=False,
)
StateDirOption = typer.Option(
    None,
    "--state-dir",
    help="State directory (default: $RAYINFRA_STATE_DIR, else ~/.rayinfra/state).",
    show_default=False,
)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load(config_path: Path | None, state_dir: Path | None = None, **flags: Any) -> LoadedConfig:
    """Load the effective config; a config error exits 2 naming the key."""
    from rayinfra.config import load_config  # pydantic: ~110 ms, only for commands that need it

    try:
        return load_config(path=config_path, overrides=_overrides(state_dir, flags))
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)


def dial(config_path: Path | None, state_dir: Path | None = None) -> DialSettings:
    """What a command that only talks to the running runtime needs of the config (its gateway,
    token, TLS CA, timeouts), resolved without the typed model; a bad value exits 2."""
    try:
        return DialSettings.from_layers(gather(path=config_path, overrides=_overrides(state_dir)))
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)


def _overrides(state_dir: Path | None, flags: dict[str, Any] | None = None) -> dict[str, Any]:
    overrides = {k: v for k, v in (flags or {}).items() if v is not None}
    if state_dir is not None:
        overrides["state.dir"] = str(state_dir)
    return overrides


def json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` (a command-line argument) as a JSON object; anything else exits 2 naming it."""
    try:
        value = json_input.loads(text)
    except ValueError as e:
        fail(f"{what}: not valid JSON: {e}", EXIT_USAGE)
    if not isinstance(value, dict):
        fail(f"{what}: must be a JSON object", EXIT_USAGE)
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def run(app: typer.Typer) -> NoReturn:
    """Run a top-level command as its console script does, and leave without the
    interpreter's finalization once every exit handler ran.

    Tearing down the modules (gRPC's core above all) costs a short command 40-90 ms after its
    work is done: a fifth of a ``rayinfra status``, and the last hop of every ``services
    start``. Skipped only after a clean ``SystemExit`` (typer ends every command with one)
    once the threads Python waits for have ended; every exit handler still runs and the
    standard streams are flushed. Any other ending (an uncaught exception, ^C) finalizes as
    usual."""
    atexit.register(_exit_now)
    try:
        app()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            _exit_code[0] = e.code or 0
        raise
    raise SystemExit(0)  # not reached: typer's standalone mode always raises SystemExit


_exit_code: list[int | None] = [None]  # set by run() when the command raised SystemExit


def _exit_now() -> None:
    """The exit handler :func:`run` registers: the handlers registered before it (they run
    after it: last in, first out) run now, then the process ends with the command's code."""
    code = _exit_code[0]
    run_rest = getattr(atexit, "_run_exitfuncs", None)  # CPython's
    main = threading.main_thread()
    if code is None or run_rest is None:
        return
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return  # (Python joined them before any exit handler: only a thread started since)
    atexit.unregister(_exit_now)
    run_rest()  # logging's shutdown, and any other, once each
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to write
            stream.flush()
    os._exit(code)


def root_app(about: str, version_label: str) -> typer.Typer:
    """A top-level command: its help without arguments, plain tracebacks, and ``--version``
    printing ``<version_label> <version>`` (eager: before any command runs)."""
    from rayinfra._version import __version__

    app = typer.Typer(
        help=about, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False
    )

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{version_label} {__version__}")
            raise typer.Exit(0)

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=show, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """Only ``--version``: the help is ``about``, the commands are added to the app."""

    return app

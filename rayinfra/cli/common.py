"""Shared CLI plumbing: exit codes, config loading, output helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

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
        value = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{what}: not valid JSON: {e}", EXIT_USAGE)
    if not isinstance(value, dict):
        fail(f"{what}: must be a JSON object", EXIT_USAGE)
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


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

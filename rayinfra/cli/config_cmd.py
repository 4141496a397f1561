"""``rayinfra config init|show``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rayinfra.cli.common import ConfigOption, StateDirOption, console, fail, load, print_json
from rayinfra.config_sources import DEFAULT_CONFIG_PATH, ENV_VARS

app = typer.Typer(help="Write or inspect the configuration.", no_args_is_help=True)


@app.command("init")
def init(
    path: Path = typer.Option(DEFAULT_CONFIG_PATH, "--path", help="Where to write the file."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented config file with every key at its default."""
    target = path.expanduser()
    if target.exists() and not force:
        fail(f"{target} exists; use --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    from rayinfra.config import default_toml

    target.write_text(default_toml())
    console.print(f"wrote {target}")


#: dict-valued config keys shown as one value
_LEAF_TABLES = ("labels", "resources", "label_selector", "runtime_env")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict) and data and (prefix.count(".") < 2 or prefix.startswith("classes.")):
        for k, v in data.items():
            if isinstance(v, dict) and k not in _LEAF_TABLES:
                out.update(_flatten(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
    else:
        out[prefix.rstrip(".")] = data
    return out


@app.command("show")
def show(
    config: Path | None = ConfigOption,
    state_dir: Path | None = StateDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {key: {value, source}}."),
) -> None:
    """Print every effective value and where it came from (default, file, env var, flag)."""
    loaded = load(config, state_dir)
    flat = _flatten(loaded.config.model_dump(mode="json"))
    rows: dict[str, dict[str, Any]] = {
        k: {"value": redacted(k, v), "source": loaded.source_of(k)} for k, v in sorted(flat.items())
    }
    env_for = {v: k for k, v in ENV_VARS.items()}
    if as_json:
        print_json(
            {
                "values": rows,
                "files": [str(f) for f in loaded.files],
                "ignored_env": loaded.ignored_env,
            }
        )
        return
    table = Table("key", "value", "source", "env var", box=None, pad_edge=False)
    for key, row in rows.items():
        table.add_row(key, repr(row["value"]), row["source"], env_for.get(key, ""))
    console.print(table)
    console.print("files: " + (", ".join(str(f) for f in loaded.files) or "(none)"))
    for var, why in loaded.ignored_env.items():
        console.print(f"[yellow]ignored:[/] {var} is set but has no effect here: {why}")


SECRET_WORDS = ("token", "password", "secret", "credential")


def redacted(key: str, value: object) -> object:
    """A secret's value as ``"<redacted>"`` (a key naming a token, password, secret or
    credential, not a file or path of one); everything else as it is."""
    name = key.rpartition(".")[2].lower()
    if name.endswith(("_file", "_path", "_dir")) or not value:
        return value
    return "<redacted>" if any(w in name for w in SECRET_WORDS) else value

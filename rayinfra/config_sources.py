"""Where config values come from, without the typed model: files, env vars, flags, layered.

:mod:`rayinfra.config` validates the layers into :class:`~rayinfra.config.RayinfraConfig`. This
module is the part that needs no pydantic, so that a command which only talks to a running
runtime (``rayinfra status``, ``task list``, ``services status``) resolves the few keys it needs
(:class:`DialSettings`) in a millisecond instead of paying pydantic's ~110 ms import and model
build (docs/benchmarks.md, "CLI"). Both read the same layers, names and defaults from here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayinfra.config import RayinfraConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

EFFECTIVE_CONFIG_FILE = "config.effective.json"
CONNECTION_FILE = "connection.json"
GATEWAY_TOKEN_FILE = "gateway.token"  # noqa: S105 - a file name, not a secret
DEFAULT_HOME = Path("~/.rayinfra")
DEFAULT_CONFIG_PATH = DEFAULT_HOME / "config.toml"
DEFAULT_STATE_DIR = DEFAULT_HOME / "state"


class ConfigError(ValueError):
    """A config value is invalid or unknown; the message names the key and its source."""


# --------------------------------------------------------------------------------------------
# addresses


def parse_listen_addr(value: str) -> tuple[str, int]:
    """Parse ``host:port``, ``:port`` (all interfaces) or ``[v6]:port`` into ``(host, port)``."""
    text = value.strip()
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", text)
    if not m:
        raise ValueError(f"{value!r} is not an address of the form host:port or :port")
    port = int(m["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in {value!r} is out of range 1-65535")
    host = m["v6"] if m["v6"] is not None else (m["host"] or "0.0.0.0")  # noqa: S104
    return host, port


def is_loopback_host(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")


def dial_addr(value: str) -> str:
    """The address a client dials for a configured listen address (``:P``/``0.0.0.0:P`` -> loopback)."""
    host, port = parse_listen_addr(value)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# environment variables (names are the original system's; tests pin this table)

#: env var -> dotted config key. ``ENV_MANAGER_CONFIG`` and ``RAYINFRA_CONFIG`` select files.
ENV_VARS: dict[str, str] = {
    "RAYINFRA_STATE_DIR": "state.dir",
    "RAYINFRA_RESULT_TTL_S": "state.result_ttl_s",
    "ENV_QUEUE_DIR": "state.queue_dir",
    "WORKFLOW_STORE_DIR": "state.workflow_store_dir",
    "WORKFLOW_RUN_DIR": "state.workflow_run_dir",
    "RAY_ADDRESS": "ray.address",
    "ORCHESTRATOR_GRPC_ADDR": "gateway.orchestrator_grpc_addr",
    "ORCHESTRATOR_HTTP_ADDR": "gateway.orchestrator_http_addr",
    "ENV_MANAGER_GRPC_ADDR": "gateway.env_manager_grpc_addr",
    "ENV_MANAGER_METRICS_ADDR": "gateway.env_manager_http_addr",
    "RAYINFRA_TOKEN_FILE": "gateway.token_file",
    "RAYINFRA_AUTH_TOKEN": "gateway.auth_token",
    "DOCKER_HOST": "services.docker_host",
    "ENV_MANAGER_MAX_CONCURRENT": "services.max_concurrent_starts",
    "ENV_MANAGER_HEALTH_TIMEOUT": "services.health_timeout_s",
    "ENV_MANAGER_VERBOSE": "services.verbose",
    "KAFKA_BOOTSTRAP_SERVERS": "events.kafka_bootstrap_servers",
    "KAFKA_EVENT_TOPIC": "events.event_topic",
    "KAFKA_VECTOR_TOPIC": "events.vector_topic",
    "KAFKA_SPOOL_DIR": "events.spool_dir",
    "REDDB_URL": "events.reddb_url",
    "DSPY_AGENT_SKIP_START": "client.skip_start",
    "DSPY_AGENT_SERVICE_TIMEOUT": "client.service_timeout_s",
    "DSPY_AGENT_RECONNECT_BACKOFF": "client.reconnect_backoff_s",
    "DSPY_AGENT_CLI_PATH": "client.cli_path",
    "RAYINFRA_TLS_CA_FILE": "client.tls_ca_file",
    "RAYINFRA_GATEWAY": "client.orchestrator_addr",
    "RAYINFRA_ADDRESS": "client.ray_address",
    "SLURM_BIN_DIR": "slurm.bin_dir",
    "SLURM_TEMPLATE_DIR": "slurm.template_dir",
    "RAYINFRA_SLURM_DIR": "slurm.shared_dir",
}

#: Documented env vars of the original that have no meaning here, and why (shown by config show).
IGNORED_ENV_VARS: dict[str, str] = {
    "ENV_RUNNER_URL": "there is no separate runner: tasks run on Ray executor actors",
    "ENV_MANAGER_ADDR": "orchestrator and service manager are actors in one runtime",
    "DISABLE_ENV_MANAGER": "the service manager is an actor; select no services instead",
}

#: keys of the original env-manager TOML (ENV_MANAGER_CONFIG) -> dotted rayinfra keys
ENV_MANAGER_TOML_KEYS: dict[str, str] = {
    "grpc_addr": "gateway.env_manager_grpc_addr",
    "metrics_http_addr": "gateway.env_manager_http_addr",
    "docker_host": "services.docker_host",
    "max_concurrent_starts": "services.max_concurrent_starts",
    "health_check_timeout_secs": "services.health_timeout_s",
    "health_check_max_attempts": "services.health_max_attempts",
    "verbose_logging": "services.verbose",
    "service_overrides": "services.overrides",
    "services": "services.definitions",  # rayinfra extension: [services.<name>] tables
}

#: dotted keys holding paths: resolved against the cwd of the resolving process, ``~`` expanded
PATH_KEYS = (
    "state.dir",
    "state.queue_dir",
    "state.workflow_store_dir",
    "state.workflow_run_dir",
    "ray.temp_dir",
    "ray.token_path",
    "gateway.token_file",
    "gateway.tls_cert_file",
    "gateway.tls_key_file",
    "events.spool_dir",
    "client.cli_path",
    "slurm.bin_dir",
    "slurm.template_dir",
    "slurm.task_template",
    "slurm.output_dir",
    "slurm.shared_dir",
    "slurm.temp_root",
)


# --------------------------------------------------------------------------------------------
# layering


def source_of(sources: Mapping[str, str], dotted: str) -> str | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        hit = sources.get(".".join(parts[:i]))
        if hit:
            return hit
    return None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {p!r} is not a table")
        node = nxt
    node[leaf] = value


def _get_dotted(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for p in dotted.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return None
        node = node[p]
    return node


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        # classes.<name> tables merge per key; other dict-valued keys (labels, runtime_env) are leaves
        if isinstance(v, dict) and (not prefix or prefix == "classes.") and k != "handlers":
            out.extend(_leaves(v, key + "."))
        else:
            out.append(key)
    return out


def _merge(
    base: dict[str, Any], overlay: Mapping[str, Any], sources: dict[str, str], src: str
) -> None:
    for key in _leaves(overlay):
        _set_dotted(base, key, _get_dotted(overlay, key))
        sources[key] = src


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e


def _expand(value: str | Path, env: Mapping[str, str]) -> Path:
    """``~`` expansion against the given environment's HOME (not necessarily this process's)."""
    text = str(value)
    if text == "~" or text.startswith("~/"):
        home = env.get("HOME") or str(Path.home())
        return Path(home + text[1:])
    return Path(text).expanduser()


def _absolute(value: str | Path, cwd: Path, env: Mapping[str, str]) -> Path:
    """``value`` with ``~`` expanded, relative to ``cwd`` unless it is absolute."""
    p = _expand(value, env)
    return p if p.is_absolute() else cwd / p


@dataclass
class Layers:
    """The merged dotted tree of every explicitly set value, and where each came from."""

    merged: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> "file:...", "env:VAR"
    files: list[Path] = field(default_factory=list)

    def get(self, dotted: str, default: Any = None) -> Any:
        value = _get_dotted(self.merged, dotted)
        return default if value is None else value


def gather(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Layers:
    """Layer the config files, env vars and ``overrides`` (dotted keys, e.g. CLI flags; they win
    over everything); paths absolute, ``state.dir`` always set. Unvalidated: see ``load_config``."""
    env = dict(os.environ if env is None else env)
    cwd = Path.cwd() if cwd is None else cwd
    layers = Layers()
    merged, sources = layers.merged, layers.sources

    explicit = path if path is not None else env.get("RAYINFRA_CONFIG") or None
    cfg_path = _absolute(DEFAULT_CONFIG_PATH if explicit is None else explicit, cwd, env)
    if explicit is not None or cfg_path.exists():
        if not cfg_path.exists():
            raise ConfigError(f"config file {cfg_path} does not exist (RAYINFRA_CONFIG)")
        _merge(merged, _read_toml(cfg_path), sources, f"file:{cfg_path}")
        layers.files.append(cfg_path)

    em = env.get("ENV_MANAGER_CONFIG")
    if em:
        em_path = _absolute(em, cwd, env)
        if not em_path.exists():
            raise ConfigError(f"ENV_MANAGER_CONFIG names {em_path}, which does not exist")
        raw = _read_toml(em_path)
        for key, value in raw.items():
            target = ENV_MANAGER_TOML_KEYS.get(key)
            if target is None:
                raise ConfigError(
                    f"{em_path}: unknown env-manager key {key!r}; "
                    f"known keys: {sorted(ENV_MANAGER_TOML_KEYS)}"
                )
            _set_dotted(merged, target, value)
            sources[target] = f"file:{em_path}"
        layers.files.append(em_path)

    for var, dotted in ENV_VARS.items():
        if var in env and env[var] != "":
            _set_dotted(merged, dotted, env[var])
            sources[dotted] = f"env:{var}"

    for dotted, value in (overrides or {}).items():
        _set_dotted(merged, dotted, value)
        sources[dotted] = "flag"

    for dotted in PATH_KEYS:
        val = _get_dotted(merged, dotted)
        if val is not None:
            _set_dotted(merged, dotted, str(_absolute(val, cwd, env)) if val != "" else None)
    if _get_dotted(merged, "state.dir") is None:
        _set_dotted(merged, "state.dir", str(_expand(DEFAULT_STATE_DIR, env)))
    return layers


# --------------------------------------------------------------------------------------------
# the client's slice: what reaching a running runtime's gateway needs

#: defaults of the keys in :class:`DialSettings`; the typed sections take theirs from here
DIAL_DEFAULTS: dict[str, Any] = {
    "gateway.orchestrator_grpc_addr": "127.0.0.1:50052",
    "gateway.env_manager_grpc_addr": "127.0.0.1:50100",
    "client.connect_timeout_s": 5.0,
    "client.service_timeout_s": 60.0,
    "client.reconnect_backoff_s": 2.0,
}


@dataclass(frozen=True)
class DialSettings:
    """How a client reaches a runtime's gateway: the same values ``RayinfraConfig`` resolves
    (``RayinfraConfig.dial``), or straight from the layers (:meth:`from_layers`)."""

    state_dir: Path
    orchestrator_grpc_addr: str
    env_manager_grpc_addr: str
    gateway_addr: str | None  # client.orchestrator_addr: an explicitly named gateway
    auth_token: str | None
    token_path: Path
    tls_ca_file: Path | None  # client.tls_ca_file, else gateway.tls_cert_file
    connect_timeout_s: float
    service_timeout_s: float
    reconnect_backoff_s: float
    gateway_enabled: bool = True

    @property
    def orchestrator_dial_addr(self) -> str:
        return self.gateway_addr or dial_addr(self.orchestrator_grpc_addr)

    @classmethod
    def from_layers(cls, layers: Layers) -> DialSettings:
        """Resolved from unvalidated layers: each value read is checked, a bad one is a
        :class:`ConfigError` naming the key and its source."""

        def value(key: str, kind: Any) -> Any:
            raw = layers.get(key, DIAL_DEFAULTS.get(key))
            if raw is None:
                return None
            try:
                out = kind(raw)
                if key.endswith("_addr") and key.startswith("gateway."):
                    parse_listen_addr(out)
                if kind is float and not out > 0:
                    raise ValueError(f"{raw!r} is not > 0")
                return out
            except (TypeError, ValueError) as e:
                src = source_of(layers.sources, key) or "default"
                raise ConfigError(f"invalid configuration: {key}: {e} (from {src})") from None

        state_dir = Path(layers.get("state.dir"))
        token_file = value("gateway.token_file", Path)
        return cls(
            state_dir=state_dir,
            orchestrator_grpc_addr=value("gateway.orchestrator_grpc_addr", str),
            env_manager_grpc_addr=value("gateway.env_manager_grpc_addr", str),
            gateway_addr=value("client.orchestrator_addr", str),
            auth_token=value("gateway.auth_token", str),
            token_path=token_file or state_dir / GATEWAY_TOKEN_FILE,
            tls_ca_file=value("client.tls_ca_file", Path) or value("gateway.tls_cert_file", Path),
            connect_timeout_s=value("client.connect_timeout_s", float),
            service_timeout_s=value("client.service_timeout_s", float),
            reconnect_backoff_s=value("client.reconnect_backoff_s", float),
            gateway_enabled=bool(layers.get("gateway.enabled", True)),
        )


def as_dial(config: RayinfraConfig | DialSettings) -> DialSettings:
    """The client slice of a full config (or the slice itself)."""
    return config if isinstance(config, DialSettings) else config.dial

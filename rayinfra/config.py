"""rayinfra configuration: one typed model, resolved once, with the source of every value.

Layering, lowest to highest precedence:

1. defaults (pinned by ``tests/unit/test_config.py``);
2. the rayinfra TOML file: ``RAYINFRA_CONFIG``, else ``~/.rayinfra/config.toml`` if it exists;
3. the original env-manager TOML file named by ``ENV_MANAGER_CONFIG`` (its keys are mapped onto
   ``[gateway]`` and ``[services]``; unlike the original, a partial file is fine);
4. environment variables, under the names the original system documented (``ENV_VARS``).

The process that runs ``rayinfra start`` resolves the config (relative paths against its cwd, env
vars from its environment) and saves it as ``<state dir>/config.effective.json``; actors receive that
dict and never read ``os.environ`` or relative paths. ``RayinfraConfig.model_validate(d)`` rebuilds
it anywhere without touching the environment.

A plain pydantic model plus an explicit env-var table is used instead of pydantic-settings' source
merging so that every value carries its provenance (``rayinfra config show``) and every error names
the key and where it came from (file path or env var).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# re-exported (``X as X``): rayinfra.config stays the one place users import config names from
from rayinfra.config_sources import (
    CONNECTION_FILE as CONNECTION_FILE,
)
from rayinfra.config_sources import (
    DEFAULT_CONFIG_PATH as DEFAULT_CONFIG_PATH,
)
from rayinfra.config_sources import (
    DEFAULT_HOME as DEFAULT_HOME,
)
from rayinfra.config_sources import (
    DEFAULT_STATE_DIR,
    DIAL_DEFAULTS,
    IGNORED_ENV_VARS,
    gather,
    source_of,
)
from rayinfra.config_sources import (
    EFFECTIVE_CONFIG_FILE as EFFECTIVE_CONFIG_FILE,
)
from rayinfra.config_sources import (
    ENV_VARS as ENV_VARS,
)
from rayinfra.config_sources import (
    GATEWAY_TOKEN_FILE as GATEWAY_TOKEN_FILE,
)
from rayinfra.config_sources import (
    ConfigError as ConfigError,
)
from rayinfra.config_sources import (
    DialSettings as DialSettings,
)
from rayinfra.config_sources import (
    dial_addr as dial_addr,
)
from rayinfra.config_sources import (
    is_loopback_host as is_loopback_host,
)
from rayinfra.config_sources import (
    parse_listen_addr as parse_listen_addr,
)
from rayinfra.hardware import ACCELERATOR_LABEL
from rayinfra.private_files import ensure_private_dir, write_private_text

NAMESPACE = "rayinfra"
#: the control actors, in start order (the gateway last: it fronts the others)
CONTROL_ACTOR_NAMES = (
    "scheduler",
    "service_registry",
    "health_checker",
    "workflows",
    "event_bus",
    "gateway",
)

TASK_CLASSES = ("cpu_short", "cpu_long", "gpu_short", "gpu_long", "gpu_slurm")
CLASS_ALIASES = {"gpu": "gpu_short"}


def private_tmp_root() -> Path:
    """``/tmp/rayinfra-<uid>``: where the default Ray temp dirs of this user's nodes live (the
    head's launch makes it 0700; Ray makes each temp dir inside it 0777)."""
    return Path("/tmp") / f"rayinfra-{os.getuid()}"  # noqa: S108 - short socket paths


# --------------------------------------------------------------------------------------------
# sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


#: the single ports a head listens on besides the dashboard's (worker range excluded)
HEAD_PORT_KEYS = (
    "gcs_port",
    "client_server_port",
    "node_manager_port",
    "object_manager_port",
    "dashboard_agent_listen_port",
    "dashboard_agent_grpc_port",
    "metrics_export_port",
    "runtime_env_agent_port",
)


class RaySection(_Section):
    """How the Ray head is started (local mode) or found (cluster mode)."""

    address: str | None = None  # cluster mode: an existing Ray cluster (RAY_ADDRESS)
    node_ip_address: str | None = None  # cluster mode: this node's IP (never loopback there)
    gcs_port: int = 6385  # not 6379: that is the redis service's port
    dashboard_port: int = 8265
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = True
    client_server_port: int = 10001
    node_manager_port: int = 6386
    object_manager_port: int = 6387
    dashboard_agent_listen_port: int = 52365
    dashboard_agent_grpc_port: int = 6388
    metrics_export_port: int = 6389
    runtime_env_agent_port: int = 6390
    min_worker_port: int = 11000
    max_worker_port: int = 11999
    temp_dir: Path | None = None  # default: /tmp/rayinfra-<uid>/<hash of state dir>
    num_cpus: int | None = Field(default=None, ge=0)
    num_gpus: int | None = Field(default=None, ge=0)
    object_store_memory: int | None = Field(default=None, ge=78643200)
    labels: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)
    auth_mode: Literal["token", "disabled"] = "token"
    token_path: Path | None = None  # default: <state dir>/ray_auth_token
    usage_stats: bool = False
    start_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, gt=0)
    drain_timeout_s: float = Field(default=2.0, ge=0)
    gcs_task_events: int = Field(default=10_000, ge=0)
    """How many task events (Ray's record of each actor call, for its dashboard and state API)
    the GCS keeps. Ray's own default, 100,000, lets a busy runtime's GCS grow by hundreds of MiB
    before it levels off; rayinfra's task history is in its own store."""

    @field_validator(*HEAD_PORT_KEYS, "dashboard_port", "min_worker_port", "max_worker_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1024 <= v <= 65535:
            raise ValueError(f"port {v} must be in 1024-65535")
        return v

    @model_validator(mode="after")
    def _distinct_ports(self) -> RaySection:
        if self.min_worker_port > self.max_worker_port:
            raise ValueError("min_worker_port must not exceed max_worker_port")
        seen: dict[int, str] = {}
        for name, port in self.named_ports().items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} both use port {port}")
            if self.min_worker_port <= port <= self.max_worker_port:
                raise ValueError(f"{name}={port} lies inside the worker port range")
            seen[port] = name
        return self

    @model_validator(mode="after")
    def _exposed_dashboard_needs_auth(self) -> RaySection:
        # the dashboard accepts jobs (it runs code for whoever reaches it): Ray's token guards it
        if (
            self.include_dashboard
            and not is_loopback_host(self.dashboard_host)
            and self.auth_mode == "disabled"
        ):
            raise ValueError(
                f"dashboard_host {self.dashboard_host!r} listens beyond loopback and the Ray "
                'dashboard runs submitted jobs: it needs auth_mode = "token" (or keep '
                "dashboard_host on 127.0.0.1 and reach it through an SSH tunnel)"
            )
        return self

    def named_ports(self) -> dict[str, int]:
        """The single ports the head listens on (worker range excluded), keyed by config name."""
        ports = {name: getattr(self, name) for name in HEAD_PORT_KEYS}
        if self.include_dashboard:
            ports["dashboard_port"] = self.dashboard_port
        return ports


class StateSection(_Section):
    """Where durable state lives (paths are absolute once resolved)."""

    dir: Path = DEFAULT_STATE_DIR  # RAYINFRA_STATE_DIR
    queue_dir: Path | None = None  # ENV_QUEUE_DIR, default <dir>/env_queue
    workflow_store_dir: Path | None = None  # WORKFLOW_STORE_DIR, default <dir>/workflows
    workflow_run_dir: Path | None = None  # WORKFLOW_RUN_DIR, default <dir>/workflow_runs
    db_file: str = "state.db"
    """The state store: a file name in ``dir``, or an absolute path (a disk of its own)."""
    result_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)  # RAYINFRA_RESULT_TTL_S
    event_ttl_s: float | None = Field(default=None, gt=0)
    """Retention of events and change rows (unset: ``result_ttl_s``)."""
    purge_interval_s: float = Field(default=3600.0, gt=0)
    """How often the scheduler purges what retention no longer keeps."""
    purge_chunk_rows: int = Field(default=1000, ge=1)
    """Rows one purge step looks at: each step is its own short write transaction."""
    purge_pause_s: float = Field(default=0.005, ge=0)
    """Pause between purge steps: other processes' writes (submits) take the lock meanwhile."""
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    group_commit_max: int = Field(default=512, ge=1)

    @property
    def db_path(self) -> Path:
        return self.dir / self.db_file


class SchedulerSection(_Section):
    """Scheduler-wide knobs (per-class knobs live in ``[classes.<name>]``)."""

    default_class: str = "cpu_short"
    unschedulable_timeout_s: float = Field(default=10.0, gt=0)
    payload_limit_bytes: int = Field(default=1024 * 1024, gt=0)
    aging_interval_s: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=64, ge=1)
    queue_poll_interval_s: float = Field(default=1.0, gt=0)
    executor_start_timeout_s: float = Field(default=300.0, gt=0)
    """An executor that has not started by then (e.g. its runtime_env never comes up) is
    killed and its class's queued tasks fail with the reason (pip/conda envs can be slow)."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """``rayinfra stop`` gives running tasks this long to end (nothing new is dispatched
    meanwhile); what still runs then is requeued as pending, durably, and runs on the next
    start. ``stop --force`` does not wait; ``stop --drain-timeout S`` overrides it."""


class ClassConfig(_Section):
    """A task class: Ray options, timeout, retry policy and limiter bounds."""

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    label_selector: dict[str, str] = Field(default_factory=dict)
    """Ray label selector of the class's executors: ``{"key": "v" | "!v" | "in(a,b)" |
    "!in(a,b)"}`` over node labels (``rayinfra hardware`` shows a node's)."""
    accelerator_type: str | None = None
    """Shorthand for ``label_selector["rayinfra.io/accelerator-type"]``: ``"H200"``, ``"!none"``."""
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    allow_shell: bool = False
    """Whether ``shell`` tasks (payload ``type: shell``: a command line run on the class's
    nodes) may be submitted to this class. Off by default: a submit is refused at admission
    (PERMISSION_DENIED / 403 naming ``payload.type``), whoever the caller (docs/configuration.md,
    "Shell tasks"). Trusted callers still need the token for ``shell`` in classes that allow it."""
    timeout_s: float | None = Field(default=None, gt=0)  # None: no timeout
    max_attempts: int = Field(default=1, ge=1)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    retry_backoff_max_s: float = Field(default=30.0, ge=0)
    min_limit: int = Field(default=1, ge=1)
    max_limit: int = Field(default=64, ge=1)
    initial_limit: int = Field(default=4, ge=1)
    executors: int = Field(default=1, ge=0)
    slots_per_executor: int | None = Field(default=None, ge=1)
    """Tasks one executor runs at once. Unset: unbounded for CPU-only classes (the adaptive
    limit governs), 1 for classes that reserve GPUs or custom resources, whose executors then
    scale out (one per free unit that Ray reports) up to ``max_limit`` tasks."""

    @property
    def node_selector(self) -> dict[str, str]:
        """The label selector with ``accelerator_type`` folded in."""
        if self.accelerator_type is None:
            return dict(self.label_selector)
        return {**self.label_selector, ACCELERATOR_LABEL: self.accelerator_type}

    @property
    def slots(self) -> int | None:
        if self.slots_per_executor is not None:
            return self.slots_per_executor
        return 1 if (self.num_gpus > 0 or self.resources) else None

    @model_validator(mode="after")
    def _bounds(self) -> ClassConfig:
        if self.min_limit > self.max_limit:
            raise ValueError("min_limit must not exceed max_limit")
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("initial_limit must lie within [min_limit, max_limit]")
        return self


def _default_classes() -> dict[str, ClassConfig]:
    return {
        # the CPU classes run shell tasks, as the original did (and the demo shows); every other
        # class, a user-defined one too, refuses them unless its table says allow_shell = true
        "cpu_short": ClassConfig(timeout_s=60.0, max_limit=256, initial_limit=8, allow_shell=True),
        "cpu_long": ClassConfig(timeout_s=None, max_limit=32, initial_limit=2, allow_shell=True),
        # GPU classes run on nodes whose detected accelerator is not "none" (rayinfra labels it)
        "gpu_short": ClassConfig(
            num_cpus=1.0,
            num_gpus=1.0,
            accelerator_type="!none",
            timeout_s=300.0,
            max_limit=16,
            initial_limit=1,
        ),
        "gpu_long": ClassConfig(
            num_cpus=1.0, num_gpus=1.0, accelerator_type="!none", max_limit=16, initial_limit=1
        ),
        "gpu_slurm": ClassConfig(
            num_cpus=0.0, timeout_s=None, max_limit=64, initial_limit=4, executors=0
        ),
    }


class TasksSection(_Section):
    """Payloads without a ``type`` (what the original system's clients send): the handler their
    fields or their class give them (:func:`rayinfra.compat.route_untyped`; docs/tasks.md,
    "Payloads without a type")."""

    route_untyped: bool = True
    """Route them; off: such a task fails when it runs (``payload.type: missing``)."""
    default_handler: str = Field(default="echo", min_length=1)
    """The handler of a payload without ``type`` whose fields pick none (the original's
    env-manager echoed what it was given; point this at your own handler)."""
    by_class: dict[str, str] = Field(default_factory=dict)
    """Per class, over ``default_handler``: ``{gpu_long = "train"}``."""
    task_types: dict[str, str] = Field(default_factory=dict)
    """``payload.task_type`` value -> handler (``{rl_episode = "rl"}``); a ``task_type`` that
    names a handler itself needs no entry."""

    @field_validator("by_class", "task_types")
    @classmethod
    def _handler_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key, handler in v.items():
            if not key or not handler:
                raise ValueError(f"{key!r} = {handler!r}: both must be non-empty")
        return v


class ServiceOverride(_Section):
    """Per-service override, as the original env-manager's ``service_overrides`` entries."""

    name: str
    required: bool | None = None
    health_check_url: str | None = None
    environment: list[str] = Field(default_factory=list)

    @field_validator("environment")
    @classmethod
    def _env_pairs(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"environment entry {item!r} is not KEY=VALUE")
        return v


class ServicesSection(_Section):
    """Service manager knobs (names follow the original env-manager config).

    The catalog is the ``profile``'s services (shipped in the package) with ``definitions``
    deep-merged on top (user services, or fields of profile services); ``selected`` names what
    ``rayinfra start`` starts (their dependencies are pulled in). Nothing is selected by default.
    """

    profile: str = "dspy"
    selected: list[str] = Field(default_factory=list)
    definitions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cluster_name: str | None = None  # label on everything started; default: host + state dir
    max_concurrent_starts: int = Field(default=5, ge=0)  # ENV_MANAGER_MAX_CONCURRENT, 0 = unlimited
    health_timeout_s: float = Field(default=60.0, ge=0)  # ENV_MANAGER_HEALTH_TIMEOUT, 0 = none
    health_max_attempts: int = Field(default=30, ge=1)
    stop_timeout_s: float = Field(default=10.0, ge=0)
    start_attempts: int = Field(default=3, ge=1)  # driver create/start tries (jittered backoff)
    # the wait before start try n+1 is start_retry_initial_s * 2**(n-1) plus up to
    # start_retry_initial_s of jitter, at most start_retry_max_s
    start_retry_initial_s: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    start_retry_max_s: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    # image pulls accepted and not ended yet (queued or running) at most: PullImages asking for
    # more is refused (RESOURCE_EXHAUSTED) instead of queueing without end
    max_queued_pulls: int = Field(default=64, ge=1)
    docker_host: str | None = None  # DOCKER_HOST
    # containers with neither networks nor network_mode join this network (created if missing;
    # default rayinfra-<cluster>); "host" or "none" also work. Never Docker's default bridge.
    docker_network: str | None = None
    verbose: bool = False  # ENV_MANAGER_VERBOSE
    overrides: list[ServiceOverride] = Field(default_factory=list)

    @field_validator("docker_network")
    @classmethod
    def _network(cls, v: str | None) -> str | None:
        if v in ("bridge", "default"):
            raise ValueError("Docker's default bridge network is not used: name your own")
        return v

    @field_validator("start_retry_max_s")
    @classmethod
    def _start_retry_max(cls, v: float, info: ValidationInfo) -> float:
        initial = info.data.get("start_retry_initial_s")  # absent: it failed validation itself
        if initial is not None and v < initial:
            raise ValueError(f"{v:g} is below services.start_retry_initial_s ({initial:g})")
        return v


_GATEWAY_ADDRS = (
    "orchestrator_grpc_addr",
    "orchestrator_http_addr",
    "env_manager_grpc_addr",
    "env_manager_http_addr",
)


class GatewaySection(_Section):
    """Listen addresses (all loopback by default) and access control."""

    enabled: bool = True
    orchestrator_grpc_addr: str = DIAL_DEFAULTS[
        "gateway.orchestrator_grpc_addr"
    ]  # ORCHESTRATOR_GRPC_ADDR
    orchestrator_http_addr: str = "127.0.0.1:9097"  # ORCHESTRATOR_HTTP_ADDR
    env_manager_grpc_addr: str = DIAL_DEFAULTS[
        "gateway.env_manager_grpc_addr"
    ]  # ENV_MANAGER_GRPC_ADDR
    env_manager_http_addr: str = "127.0.0.1:50101"  # ENV_MANAGER_METRICS_ADDR
    token_file: Path | None = None  # RAYINFRA_TOKEN_FILE; default <state dir>/gateway.token
    # "auto": required when auth_token is set or a server listens beyond loopback, else off
    auth: Literal["auto", "required", "off"] = "auto"
    auth_token: str | None = None  # RAYINFRA_AUTH_TOKEN; default: the token file's token
    allow_untrusted_code: bool = False  # let unauthenticated callers run shell/python tasks
    tls_cert_file: Path | None = None  # both set: gRPC and HTTP serve TLS
    tls_key_file: Path | None = None
    max_request_bytes: int = Field(default=4 * 1024 * 1024, gt=0)  # gRPC message / HTTP body cap
    # per-client limits (rayinfra.api.limits; docs/configuration.md, "Gateway limits"): a
    # client is a valid token's identity, else the caller's host; over a limit: gRPC
    # RESOURCE_EXHAUSTED, HTTP 429 with Retry-After
    client_rate_per_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Requests a client may start per second, on average (a token bucket); 0: no rate limit."""
    client_rate_burst: int = Field(default=50, ge=1)
    """Requests a client may start at once, above the rate (the bucket's size)."""
    client_max_inflight: int = Field(default=1024, ge=0)
    """Requests a client may have in flight at once (a stream counts while open); 0: no limit."""
    client_limit_tracked: int = Field(default=10_000, ge=1)
    """Clients whose rate is remembered (least recently seen forgotten first), and clients that
    may have requests in flight at once: bounds the limits' memory however many clients call."""
    # clients of the original protos (docs/api.md, "Original and current clients"):
    original_payload_decoding: bool = True
    """Decode the original map fields' strings (SubmitTask ``payload``, StartWorkflowRun
    ``input``, ExecuteTask ``payload``) as the original server did (``"True"`` -> true,
    ``"007"`` -> 7); off: as JSON where they parse. ``payload_json`` is strict JSON either way."""
    stream_resend_interval_s: float = Field(default=1.0, ge=0)
    """StreamTaskResults re-sends the watched tasks' states this often, as the original did
    (0: never; a request with ``changes_only`` gets changes only)."""

    @field_validator(*_GATEWAY_ADDRS)
    @classmethod
    def _addr(cls, v: str) -> str:
        parse_listen_addr(v)
        return v.strip()

    def addresses(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _GATEWAY_ADDRS}

    def exposed(self) -> list[str]:
        """Servers configured to listen beyond loopback."""
        return [
            f"{name}={addr!r}"
            for name, addr in self.addresses().items()
            if not is_loopback_host(parse_listen_addr(addr)[0])
        ]

    def auth_required(self) -> bool:
        if self.auth == "auto":
            return self.auth_token is not None or bool(self.exposed())
        return self.auth == "required"

    @model_validator(mode="after")
    def _exposed_needs_auth(self) -> GatewaySection:
        exposed = self.exposed()
        if exposed and self.auth_token is None and self.token_file is None:
            raise ValueError(
                f"{', '.join(exposed)} listens beyond loopback and needs a token: set "
                "RAYINFRA_AUTH_TOKEN or gateway.token_file (RAYINFRA_TOKEN_FILE)"
            )
        if exposed and self.auth == "off":
            raise ValueError(
                f"{', '.join(exposed)} listens beyond loopback, which needs auth: "
                'gateway.auth cannot be "off" (set RAYINFRA_AUTH_TOKEN or keep auth "auto")'
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("gateway.tls_cert_file and gateway.tls_key_file go together")
        return self


#: KafkaProducer settings the event bus's guarantees rest on (docs/events.md): not overridable
KAFKA_PINNED_OPTIONS = (
    "acks",
    "bootstrap_servers",
    "delivery_timeout_ms",
    "enable_idempotence",
    "key_serializer",
    "max_in_flight_requests_per_connection",
    "partitioner",
    "retries",
    "transactional_id",
    "value_serializer",
)


class EventsSection(_Section):
    """Where events go besides the state store (the ``event_bus`` actor: docs/events.md)."""

    kafka_bootstrap_servers: str | None = None  # KAFKA_BOOTSTRAP_SERVERS; None = no Kafka sink
    event_topic: str = "agent.events"  # KAFKA_EVENT_TOPIC
    vector_topic: str = "agent.vectorized"  # KAFKA_VECTOR_TOPIC
    spool_dir: Path | None = None  # KAFKA_SPOOL_DIR, default <state dir>/kafka
    reddb_url: str | None = None  # REDDB_URL
    publish_batch: int = Field(default=1000, ge=1)  # events per round (one wait for the broker)
    # a round the broker leaves unanswered this long counts as a publish error (and is retried)
    kafka_timeout_s: float = Field(default=10.0, gt=0)
    # a larger envelope goes out with its data cut (docs/events.md)
    kafka_max_message_bytes: int = Field(default=1_000_000, ge=1024)
    # more KafkaProducer settings (security_protocol, sasl_*, ssl_*, compression_type, ...)
    kafka_options: dict[str, Any] = Field(default_factory=dict)
    # "idle": the bus publishes on CPU the task path leaves (Linux SCHED_IDLE), "normal": as
    # any Ray worker (docs/events.md)
    publish_priority: Literal["idle", "normal"] = "idle"

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        for server in v.split(","):
            if server.strip() and not re.fullmatch(r"\[?[\w.:-]+\]?:\d{1,5}", server.strip()):
                raise ValueError(f"{server.strip()!r} is not host:port (comma-separated list)")
        return v

    @field_validator("kafka_options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        pinned = sorted(set(v) & set(KAFKA_PINNED_OPTIONS))
        if pinned:
            raise ValueError(
                f"{', '.join(pinned)} cannot be set: the event bus's ordering and delivery rest "
                "on them (docs/events.md)"
            )
        return v


class ClientSection(_Section):
    """What AgentInfra reads (the original Python client's env vars)."""

    orchestrator_addr: str | None = None  # RAYINFRA_GATEWAY: use this gateway (gRPC)
    ray_address: str | None = None  # RAYINFRA_ADDRESS: the runtime's Ray cluster (actor handles)
    skip_start: bool = False  # DSPY_AGENT_SKIP_START
    service_timeout_s: float = Field(default=DIAL_DEFAULTS["client.service_timeout_s"], gt=0)
    reconnect_backoff_s: float = Field(default=DIAL_DEFAULTS["client.reconnect_backoff_s"], gt=0)
    cli_path: Path | None = None  # DSPY_AGENT_CLI_PATH
    connect_timeout_s: float = Field(default=DIAL_DEFAULTS["client.connect_timeout_s"], gt=0)
    # CA (PEM) to verify a TLS gateway; default gateway.tls_cert_file (a self-signed local one)
    tls_ca_file: Path | None = None  # RAYINFRA_TLS_CA_FILE


class SlurmSection(_Section):
    """Slurm: where its commands are, ``gpu_slurm`` task jobs, and ``rayinfra slurm up`` clusters.
    Values that reach an sbatch script are checked again where the script is rendered."""

    bin_dir: Path | None = None  # SLURM_BIN_DIR: where sbatch, squeue, ... are (default: PATH)
    command_timeout_s: float = Field(default=30.0, gt=0)  # one Slurm command
    partition: str | None = None  # default partition of task jobs and clusters
    account: str | None = None
    # gpu_slurm tasks ------------------------------------------------------------------------
    # the original's deploy/slurm: payload.template / payload.method pick a template file here
    template_dir: Path | None = None  # SLURM_TEMPLATE_DIR
    task_template: Path | None = None  # used when nothing picks one; default: the shipped one
    # placeholder values over the template's defaults (e.g. MEMORY_GB = 4): the payload wins
    task_values: dict[str, str | int | float] = Field(default_factory=dict)
    output_dir: Path | None = None  # LOG_DIR of task jobs; default <state dir>/slurm/tasks
    poll_interval_s: float = Field(default=2.0, gt=0)  # the watcher's squeue period (backs off)
    poll_max_interval_s: float = Field(default=30.0, gt=0)
    # clusters (rayinfra slurm up) -------------------------------------------------------------
    # visible from every node: <shared_dir>/<job id>/connection.json; default ~/.rayinfra/slurm
    shared_dir: Path | None = None  # RAYINFRA_SLURM_DIR
    temp_root: Path = Path("/tmp")  # noqa: S108 - per-job dirs <temp_root>/ri-<job id>, short paths
    interface: str | None = None  # take each node's IP from this interface (e.g. ib0)
    node_ip: str | None = None  # force the node IP (single-node allocations, tests)
    nodes: int = Field(default=1, ge=1)
    cpus_per_node: int | None = Field(default=None, ge=1)
    gpus_per_node: int = Field(default=0, ge=0)
    time: str | None = None  # Slurm time limit of the cluster job
    extra_sbatch: list[str] = Field(default_factory=list)  # more #SBATCH options (--name=value)
    labels: dict[str, str] = Field(default_factory=dict)  # more node labels on every node
    up_timeout_s: float = Field(default=600.0, gt=0)  # slurm up: submit -> rayinfra serving

    @model_validator(mode="after")
    def _poll(self) -> SlurmSection:
        if self.poll_max_interval_s < self.poll_interval_s:
            raise ValueError("slurm.poll_max_interval_s must be >= slurm.poll_interval_s")
        return self

    @property
    def cluster_dir(self) -> Path:
        """Where cluster jobs keep their connection files (shared by every node)."""
        return self.shared_dir or (DEFAULT_HOME / "slurm").expanduser()


_HANDLER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class RayinfraConfig(_Section):
    """The whole effective configuration."""

    ray: RaySection = Field(default_factory=RaySection)
    state: StateSection = Field(default_factory=StateSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    classes: dict[str, ClassConfig] = Field(default_factory=_default_classes)
    handlers: dict[str, str] = Field(default_factory=dict)
    tasks: TasksSection = Field(default_factory=TasksSection)
    services: ServicesSection = Field(default_factory=ServicesSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    events: EventsSection = Field(default_factory=EventsSection)
    client: ClientSection = Field(default_factory=ClientSection)
    slurm: SlurmSection = Field(default_factory=SlurmSection)

    @field_validator("handlers")
    @classmethod
    def _handlers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, target in v.items():
            if not _HANDLER_RE.match(target):
                raise ValueError(f"handler {name!r}: {target!r} is not of the form 'pkg.mod:fn'")
        return v

    @model_validator(mode="after")
    def _classes_known(self) -> RayinfraConfig:
        default = CLASS_ALIASES.get(self.scheduler.default_class, self.scheduler.default_class)
        if default not in self.classes:
            raise ValueError(
                f"scheduler.default_class {self.scheduler.default_class!r} is not a class; "
                f"choose one of {sorted(self.classes)}"
            )
        unknown = sorted(c for c in self.tasks.by_class if c not in self.classes)
        if unknown:
            raise ValueError(
                f"tasks.by_class names {', '.join(map(repr, unknown))}, not a class; "
                f"choose among {sorted(self.classes)}"
            )
        return self

    # derived paths -------------------------------------------------------------------------
    @property
    def queue_dir(self) -> Path:
        return self.state.queue_dir or self.state.dir / "env_queue"

    @property
    def workflow_store_dir(self) -> Path:
        return self.state.workflow_store_dir or self.state.dir / "workflows"

    @property
    def workflow_run_dir(self) -> Path:
        return self.state.workflow_run_dir or self.state.dir / "workflow_runs"

    @property
    def spool_dir(self) -> Path:
        return self.events.spool_dir or self.state.dir / "kafka"

    @property
    def slurm_output_dir(self) -> Path:
        return self.slurm.output_dir or self.state.dir / "slurm" / "tasks"

    @property
    def ray_token_path(self) -> Path:
        return self.ray.token_path or self.state.dir / "ray_auth_token"

    @property
    def gateway_token_path(self) -> Path:
        """The gateway's local token file (0600, created at the gateway's first start)."""
        return self.gateway.token_file or self.state.dir / GATEWAY_TOKEN_FILE

    @property
    def ray_temp_dir(self) -> Path:
        """Ray's ``--temp-dir`` (sockets, session logs). Ray makes it world-writable (0777), so
        the default lies in a directory of this user's own, ``/tmp/rayinfra-<uid>`` (0700,
        made so by the head's launch), one per state dir; short, for Ray's socket paths."""
        if self.ray.temp_dir is not None:
            return self.ray.temp_dir
        import hashlib

        digest = hashlib.sha256(str(self.state.dir).encode()).hexdigest()[:8]
        return private_tmp_root() / digest

    @property
    def orchestrator_dial_addr(self) -> str:
        return self.dial.orchestrator_dial_addr

    @property
    def dial(self) -> DialSettings:
        """What a client of this config's gateway needs (the CLI resolves the same without the
        model: :meth:`DialSettings.from_layers`)."""
        return DialSettings(
            state_dir=self.state.dir,
            orchestrator_grpc_addr=self.gateway.orchestrator_grpc_addr,
            env_manager_grpc_addr=self.gateway.env_manager_grpc_addr,
            gateway_addr=self.client.orchestrator_addr,
            auth_token=self.gateway.auth_token,
            token_path=self.gateway_token_path,
            tls_ca_file=self.client.tls_ca_file or self.gateway.tls_cert_file,
            connect_timeout_s=self.client.connect_timeout_s,
            service_timeout_s=self.client.service_timeout_s,
            reconnect_backoff_s=self.client.reconnect_backoff_s,
            gateway_enabled=self.gateway.enabled,
        )

    def class_config(self, name: str) -> ClassConfig:
        """Look up a class by name or alias (``gpu`` -> ``gpu_short``); KeyError names the choices."""
        key = CLASS_ALIASES.get(name, name)
        try:
            return self.classes[key]
        except KeyError:
            raise KeyError(
                f"unknown task class {name!r}; choose one of {self.class_names()}"
            ) from None

    def class_names(self) -> list[str]:
        return sorted([*self.classes, *CLASS_ALIASES])


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class LoadedConfig:
    """A resolved config plus where each explicitly set value came from."""

    config: RayinfraConfig
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> "file:...", "env:VAR"
    files: list[Path] = field(default_factory=list)
    ignored_env: dict[str, str] = field(default_factory=dict)  # set but meaningless here

    def source_of(self, dotted: str) -> str:
        """The source of a dotted key, or of its nearest set parent; ``default`` otherwise."""
        return source_of(self.sources, dotted) or "default"


def load_config(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Resolve the effective config from defaults, TOML files, env vars and explicit overrides.

    ``overrides`` maps dotted keys to values (e.g. CLI flags); they win over everything.
    Raises :class:`ConfigError` naming the offending key and its source.
    """
    env = dict(os.environ if env is None else env)
    layers = gather(env, cwd, path, overrides)
    merged, sources = layers.merged, layers.sources
    # per-class tables overlay the defaults key by key rather than replacing the whole class
    if isinstance(merged.get("classes"), dict):
        defaults = {k: v.model_dump() for k, v in _default_classes().items()}
        for name, table in merged["classes"].items():
            if isinstance(table, dict) and name in defaults:
                merged["classes"][name] = {**defaults[name], **table}
        merged["classes"] = {**defaults, **merged["classes"]}

    try:
        config = RayinfraConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_describe(e, sources)) from None
    ignored = {v: IGNORED_ENV_VARS[v] for v in IGNORED_ENV_VARS if env.get(v)}
    return LoadedConfig(config=config, sources=sources, files=layers.files, ignored_env=ignored)


def _describe(err: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        src = source_of(sources, loc)
        where = f" (from {src})" if src else ""
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}{where}")
        else:
            lines.append(f"{loc or 'config'}: {e['msg']}{where}")
    return "invalid configuration: " + "; ".join(lines)


# --------------------------------------------------------------------------------------------
# persistence of the effective config (written by `rayinfra start`, read by actors and clients)


def config_to_dict(config: RayinfraConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def save_effective(config: RayinfraConfig, state_dir: Path | None = None) -> Path:
    """Write the effective config atomically to ``<state dir>/config.effective.json``."""
    target_dir = ensure_private_dir(state_dir or config.state.dir)
    # 0600: it may hold the auth token
    return write_private_text(
        target_dir / EFFECTIVE_CONFIG_FILE,
        json.dumps(config_to_dict(config), indent=2, sort_keys=True),
    )


def load_effective(state_dir: Path) -> RayinfraConfig:
    """Rebuild the config a runtime was started with (no environment is consulted)."""
    path = state_dir / EFFECTIVE_CONFIG_FILE
    try:
        return RayinfraConfig.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no effective config at {path}: is rayinfra started?") from None
    except (ValueError, ValidationError) as e:
        raise ConfigError(f"{path}: unreadable effective config: {e}") from None


# --------------------------------------------------------------------------------------------
# `rayinfra config init`


def default_toml() -> str:
    """A commented TOML file listing every section and key at its default."""
    cfg = RayinfraConfig.model_validate({"state": {"dir": str(StateSection().dir)}})
    env_for: dict[str, str] = {v: k for k, v in ENV_VARS.items()}
    out = [
        "# rayinfra configuration. Every key is optional; missing keys take these defaults.",
        "# Precedence: this file < ENV_MANAGER_CONFIG file < environment variables < CLI flags.",
        "# Relative paths resolve against the directory `rayinfra start` runs in.",
        "",
    ]
    for section, body in cfg.model_dump(mode="json").items():
        if section == "classes":  # one table per class
            tables = {f"classes.{name}": table for name, table in body.items()}
        else:
            tables = {section: body}
        for name, table in tables.items():
            out.append(f"[{name}]")
            if isinstance(table, dict):
                out.extend(_toml_lines(table, name, env_for))
            out.append("")
    return "\n".join(out)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _toml_lines(table: Mapping[str, Any], prefix: str, env_for: Mapping[str, str]) -> list[str]:
    lines = []
    for key, value in table.items():
        env_note = f"  # env {env_for[prefix + '.' + key]}" if prefix + "." + key in env_for else ""
        if value is None:
            lines.append(f"# {key} = (unset){env_note}")
        else:
            lines.append(f"{key} = {toml_value(value)}{env_note}")
    return lines

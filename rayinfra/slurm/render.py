"""sbatch scripts, rendered as text: pure functions, no I/O beyond reading package data.

* :func:`render_cluster_job` — the script ``rayinfra slurm up`` submits: a Ray head on the
  allocation's first node, a worker on every other node, rayinfra (the driver command) on the head.
* :func:`render_task_job` — a ``gpu_slurm`` task's script, from a template with the original
  bridge's ``${PLACEHOLDER}`` s (:data:`TASK_PLACEHOLDERS`).

Nothing a user or a task payload supplies is ever pasted into shell code: values are validated
(ints, Slurm time formats, simple names, no newlines; a ValueError names the field) and reach the
script as single-quoted shell assignments (``shlex.quote``) near its top; ``#SBATCH`` lines, which
sbatch parses without a shell, get validated values only.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rayinfra import json_input
from rayinfra.errors import InvalidArgumentError
from rayinfra.hardware import GPU_COUNT_LABEL, ROLE_LABEL, validate_label
from rayinfra.head import WORKER_PORT_FLAGS
from rayinfra.slurm.validate import (
    ENV_NAME,
    INTERFACE,
    PARTITIONS,
    SBATCH_OPTION,
    SBATCH_WORD,
    SIMPLE_NAME,
    assign,
    integer,
    matching,
    sbatch_path,
    slurm_time,
    text_field,
)

__all__ = [
    "CLUSTER_PLACEHOLDERS",
    "DEFAULT_DRIVER_COMMAND",
    "DEFAULT_WORKER_COMMAND",
    "GATEWAY_PORT_NAMES",
    "HEAD_PORT_NAMES",
    "RAY_START_WORKER_COMMAND",
    "SLURM_JOB_LABEL",
    "TASK_ARGV_VAR",
    "TASK_PLACEHOLDERS",
    "ClusterJobSpec",
    "Placeholder",
    "default_task_template",
    "render_cluster_job",
    "render_task_job",
    "resolve_task_values",
]

#: node label carrying the Slurm job id of the cluster a node belongs to
SLURM_JOB_LABEL = "rayinfra.io/slurm-job"
#: the head's ports, in the connection file's ``ports`` (``gcs-port`` is ``ray start --port``);
#: the worker ports are :data:`rayinfra.head.WORKER_PORT_FLAGS`, as ``rayinfra join`` uses them
HEAD_PORT_NAMES = ("gcs-port", *WORKER_PORT_FLAGS, "ray-client-server-port", "dashboard-port")
#: the ports of rayinfra's gateway on the head (picked free per job unless given), each the
#: listen-address variable the driver command gets (rayinfra's env var names); connection file
#: ``gateway``
GATEWAY_PORT_NAMES: dict[str, str] = {
    "orchestrator-grpc-port": "ORCHESTRATOR_GRPC_ADDR",
    "orchestrator-http-port": "ORCHESTRATOR_HTTP_ADDR",
    "env-manager-grpc-port": "ENV_MANAGER_GRPC_ADDR",
    "env-manager-http-port": "ENV_MANAGER_METRICS_ADDR",
}

_PLACEHOLDER_TOKEN = re.compile(r"\{([a-z_]+)\}")
_HARDWARE_ARGS = "{hardware_args}"


# ------------------------------------------------------------------------------------------
# the cluster job

#: placeholders a worker or driver command may use, each the shell variable it becomes;
#: ``{hardware_args}`` (a whole argument) is several: ``--num-cpus``, ``--num-gpus``,
#: ``--labels`` and ``--resources`` as :func:`rayinfra.hardware.ray_start_args` builds them on
#: the node; ``{labels}`` is the extra labels alone (the user's and the Slurm job's)
CLUSTER_PLACEHOLDERS: dict[str, str] = {
    "ray": "RI_RAY",
    "rayinfra": "RI_RAYINFRA",
    "python": "RI_PYTHON",
    "gcs_address": "RI_GCS_ADDRESS",
    "head_ip": "RI_HEAD_IP",
    "gcs_port": "RI_GCS_PORT",
    "node_ip": "RI_NODE_IP",
    "temp_dir": "RI_TEMP_DIR",
    "state_dir": "RI_STATE_DIR",
    "job_id": "RI_JOB_ID",
    "job_dir": "RI_JOB_DIR",
    "connection_file": "RI_CONNECTION_FILE",
    "num_cpus": "RI_NUM_CPUS",
    "num_gpus": "RI_NUM_GPUS",
    "labels": "RI_NODE_LABELS",
    "hardware_args": "RI_HARDWARE_ARGS",
    "ray_token_file": "RI_RAY_TOKEN_FILE",
    **{
        flag.replace("-", "_"): "RI_" + flag.upper().replace("-", "_") for flag in WORKER_PORT_FLAGS
    },
}

#: how a worker node joins: ``rayinfra join`` (the one way to join, as ``cluster.yaml``'s workers
#: do) with this node's IP, its share of the allocation's CPUs and GPUs, the job's labels and a
#: temp dir of its own; join picks its ports free and detects the hardware labels itself, and
#: reads the cluster's Ray token from ``RAY_AUTH_TOKEN_PATH`` (the job exports it)
DEFAULT_WORKER_COMMAND: tuple[str, ...] = (
    "{rayinfra}",
    "join",
    "{gcs_address}",
    "--block",
    "--node-ip-address={node_ip}",
    "--num-cpus={num_cpus}",
    "--num-gpus={num_gpus}",
    "--labels={labels}",
    "--temp-dir={temp_dir}",
)
#: the same with plain ``ray start``, for worker nodes without rayinfra: every listening port
#: picked free on the node, an explicit node IP, a short temp dir, the node's labels
RAY_START_WORKER_COMMAND: tuple[str, ...] = (
    "{ray}",
    "start",
    "--address={gcs_address}",
    "--block",
    "--node-ip-address={node_ip}",
    *(f"--{flag}={{{flag.replace('-', '_')}}}" for flag in WORKER_PORT_FLAGS),
    "--min-worker-port=0",
    "--max-worker-port=0",
    "--temp-dir={temp_dir}",
    "{hardware_args}",
    "--disable-usage-stats",
)
#: what runs on the head once Ray serves: rayinfra's control actors, attached to the cluster
#: (its gateway listens where ``GATEWAY_PORT_NAMES`` ' variables say, the job exports them)
DEFAULT_DRIVER_COMMAND: tuple[str, ...] = (
    "{rayinfra}",
    "start",
    "--address={gcs_address}",
    "--daemon",
    "--state-dir={state_dir}",
)


@dataclass(frozen=True)
class ClusterJobSpec:
    """What ``rayinfra slurm up`` asks for. Paths are used as given (absolute is wise: the job
    runs in the submission directory). ``None`` for ``shared_dir`` means
    ``${RAYINFRA_SLURM_DIR:-$HOME/.rayinfra/slurm}`` at run time; it must be visible from every
    node (the connection file ``<shared_dir>/<job id>/connection.json`` goes there)."""

    nodes: int = 1
    partition: str | None = None
    account: str | None = None
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    time: str | None = None
    job_name: str = "rayinfra"
    output: str = "rayinfra-%j.out"
    shared_dir: str | None = None
    temp_root: str = "/tmp"  # noqa: S108 - per-job dirs <temp_root>/ri-<job id>: short socket paths
    state_dir: str | None = None  # rayinfra's state dir; default <temp dir>/state on the head
    interface: str | None = None
    node_ip: str | None = None  # forced node IP (single node / tests); else interface, hostname -I
    ports: Mapping[str, int] = field(default_factory=dict)  # HEAD_PORT_NAMES; missing: picked free
    gateway_host: str | None = None  # rayinfra's gateway listens here; default: the head's IP
    gateway_ports: Mapping[str, int] = field(default_factory=dict)  # GATEWAY_PORT_NAMES; free
    ray_auth: bool = True  # a Ray auth token per job (<job dir>/ray_auth_token, 0600)
    workers_per_node: int = 1  # Ray nodes per Slurm node (the head's node: head + this - 1)
    min_worker_port: int = 0  # 0/0: Ray's workers take ports the OS picks
    max_worker_port: int = 0
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    usage_stats: bool = False
    python: str = "python3"
    ray: str = "ray"
    rayinfra: str = "rayinfra"
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    extra_sbatch: Sequence[str] = ()
    worker_command: Sequence[str] = DEFAULT_WORKER_COMMAND
    driver_command: Sequence[str] | None = DEFAULT_DRIVER_COMMAND  # None: Ray only
    head_timeout_s: int = 120
    worker_timeout_s: int = 300
    driver_timeout_s: int = 300
    stop_timeout_s: int = 30
    signal_grace_s: int = 60  # SIGTERM to the batch shell this long before the time limit


def _command_function(name: str, field_name: str, argv: Sequence[str], *, exec_: bool) -> str:
    """A shell function running ``argv``; ``{placeholder}`` s become quoted variable expansions,
    everything else is single-quoted."""
    if isinstance(argv, str) or not argv:
        raise InvalidArgumentError(field_name, "must be a non-empty list of arguments")
    words = []
    for i, arg in enumerate(argv):
        token = text_field(f"{field_name}[{i}]", arg, allow_empty=True)
        if token == _HARDWARE_ARGS:  # several arguments: the whole token only
            words.append('"${RI_HARDWARE_ARGS[@]}"')
            continue
        parts: list[str] = []
        pos = 0
        for m in _PLACEHOLDER_TOKEN.finditer(token):
            var = CLUSTER_PLACEHOLDERS.get(m.group(1))
            if m.group(1) == "hardware_args":
                raise InvalidArgumentError(
                    f"{field_name}[{i}]", "{hardware_args} must be a whole argument"
                )
            if var is None:
                known = ", ".join("{" + k + "}" for k in CLUSTER_PLACEHOLDERS)
                raise InvalidArgumentError(
                    f"{field_name}[{i}]", f"unknown placeholder {m.group(0)} (known: {known})"
                )
            if m.start() > pos:
                parts.append(shlex.quote(token[pos : m.start()]))
            parts.append(f'"${{{var}}}"')
            pos = m.end()
        if pos < len(token) or not parts:
            parts.append(shlex.quote(token[pos:]))
        words.append("".join(parts))
    body = " \\\n    ".join(words)
    return f"{name}() {{\n  {'exec ' if exec_ else ''}{body}\n}}"


def _validate_spec(spec: ClusterJobSpec) -> None:
    integer("nodes", spec.nodes, 1)
    integer("gpus_per_node", spec.gpus_per_node, 0)
    if spec.cpus_per_node is not None:
        integer("cpus_per_node", spec.cpus_per_node, 1)
    if spec.time is not None:
        slurm_time("time", spec.time)
    if spec.partition is not None:
        matching("partition", spec.partition, PARTITIONS, "must be partition name(s) a,b")
    if spec.account is not None:
        matching("account", spec.account, SIMPLE_NAME, "must be a simple name ([A-Za-z0-9_.+-])")
    matching("job_name", spec.job_name, SIMPLE_NAME, "must be a simple name ([A-Za-z0-9_.+-])")
    for name in ("output", "temp_root", "python", "ray", "rayinfra"):
        text_field(name, getattr(spec, name))
    for name in ("shared_dir", "state_dir"):
        if getattr(spec, name) is not None:
            text_field(name, getattr(spec, name))
    if spec.interface is not None:
        matching("interface", spec.interface, INTERFACE, "must be a network interface name")
    for name in ("node_ip", "dashboard_host", "gateway_host"):
        value = getattr(spec, name)
        if value is not None:
            try:
                ipaddress.IPv4Address(text_field(name, value))
            except ValueError:
                raise InvalidArgumentError(
                    name, f"must be an IPv4 address, got {value!r}"
                ) from None
    for key, port in spec.ports.items():
        if key not in HEAD_PORT_NAMES:
            raise InvalidArgumentError(
                f"ports.{key}", f"unknown port (known: {', '.join(HEAD_PORT_NAMES)})"
            )
        if integer(f"ports.{key}", port, 1) > 65535:
            raise InvalidArgumentError(f"ports.{key}", f"must be <= 65535, got {port}")
    for key, port in spec.gateway_ports.items():
        if key not in GATEWAY_PORT_NAMES:
            raise InvalidArgumentError(
                f"gateway_ports.{key}", f"unknown port (known: {', '.join(GATEWAY_PORT_NAMES)})"
            )
        if integer(f"gateway_ports.{key}", port, 1) > 65535:
            raise InvalidArgumentError(f"gateway_ports.{key}", f"must be <= 65535, got {port}")
    integer("workers_per_node", spec.workers_per_node, 1)
    for name in ("min_worker_port", "max_worker_port"):
        if integer(name, getattr(spec, name), 0) > 65535:
            raise InvalidArgumentError(name, "must be <= 65535")
    if spec.min_worker_port > spec.max_worker_port:
        raise InvalidArgumentError("min_worker_port", "must not exceed max_worker_port")
    for key, value in spec.labels.items():
        try:
            validate_label(key, value)
        except ValueError as e:
            raise InvalidArgumentError(f"labels.{key}", str(e)) from None
        if key in (ROLE_LABEL, SLURM_JOB_LABEL):
            raise InvalidArgumentError(f"labels.{key}", "is set by the cluster job itself")
    for key, value in spec.env.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key) or key.startswith("RI_"):
            raise InvalidArgumentError(
                f"env.{key}", "must be a variable name ([A-Za-z_][A-Za-z0-9_]*, not RI_*)"
            )
        text_field(f"env.{key}", value, allow_empty=True)
    for i, option in enumerate(spec.extra_sbatch):
        matching(f"extra_sbatch[{i}]", option, SBATCH_OPTION, "must be --name or --name=value")
    timeouts = ("head_timeout_s", "worker_timeout_s", "driver_timeout_s", "stop_timeout_s")
    for name in (*timeouts, "signal_grace_s"):
        integer(name, getattr(spec, name), 1)


def _cluster_body() -> str:
    return resources.files("rayinfra.slurm").joinpath("templates/cluster.sh").read_text()


def render_cluster_job(spec: ClusterJobSpec) -> str:
    """The sbatch script of a Ray cluster with rayinfra on its head (see :class:`ClusterJobSpec`
    and ``templates/cluster.sh``). Raises ValueError (:class:`InvalidArgumentError`) naming the
    first invalid field."""
    _validate_spec(spec)
    sbatch = [
        f"--job-name={spec.job_name}",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
    ]
    if spec.cpus_per_node is not None:
        sbatch.append(f"--cpus-per-task={spec.cpus_per_node}")
    if spec.gpus_per_node:
        sbatch.append(f"--gpus-per-node={spec.gpus_per_node}")
    if spec.time is not None:
        sbatch.append(f"--time={spec.time}")
    if spec.partition is not None:
        sbatch.append(f"--partition={spec.partition}")
    if spec.account is not None:
        sbatch.append(f"--account={spec.account}")
    sbatch.append(f"--output={sbatch_path('output', spec.output)}")
    sbatch.append(f"--signal=B:TERM@{spec.signal_grace_s}")
    sbatch.extend(spec.extra_sbatch)

    head_names = [n for n in HEAD_PORT_NAMES if n != "dashboard-port" or spec.include_dashboard]
    labels = ",".join(f"{k}={spec.labels[k]}" for k in sorted(spec.labels))
    settings = [
        assign("RI_NODES", str(spec.nodes)),
        assign("RI_PYTHON", spec.python),
        assign("RI_RAY", spec.ray),
        assign("RI_RAYINFRA", spec.rayinfra),
        assign("RI_TEMP_ROOT", spec.temp_root),
        assign("RI_NODE_IP_FORCED", spec.node_ip or ""),
        assign("RI_INTERFACE", spec.interface or ""),
        assign("RI_NUM_GPUS", str(spec.gpus_per_node)),
        assign("RI_EXTRA_LABELS", labels),
        assign("RI_JOB_LABEL", SLURM_JOB_LABEL),
        assign("RI_ROLE_LABEL", ROLE_LABEL),
        assign("RI_GPU_COUNT_LABEL", GPU_COUNT_LABEL),
        assign("RI_HEAD_PORT_NAMES", " ".join(head_names)),
        assign("RI_HEAD_PORT_VALUES", " ".join(str(spec.ports.get(n, 0)) for n in head_names)),
        assign("RI_WORKER_PORT_NAMES", " ".join(WORKER_PORT_FLAGS)),
        assign("RI_WORKERS_PER_NODE", str(spec.workers_per_node)),
        assign("RI_GATEWAY_HOST", spec.gateway_host or ""),  # "": the head's IP
        assign("RI_GATEWAY_PORT_NAMES", " ".join(GATEWAY_PORT_NAMES)),
        assign("RI_GATEWAY_PORT_VARS", " ".join(GATEWAY_PORT_NAMES.values())),
        assign(
            "RI_GATEWAY_PORT_VALUES",
            " ".join(str(spec.gateway_ports.get(n, 0)) for n in GATEWAY_PORT_NAMES),
        ),
        assign("RI_RAY_AUTH", "token" if spec.ray_auth else "disabled"),
        assign("RI_MIN_WORKER_PORT", str(spec.min_worker_port)),
        assign("RI_MAX_WORKER_PORT", str(spec.max_worker_port)),
        assign("RI_INCLUDE_DASHBOARD", "true" if spec.include_dashboard else "false"),
        assign("RI_DASHBOARD_HOST", spec.dashboard_host),
        assign("RI_USAGE_STATS", "true" if spec.usage_stats else "false"),
        assign("RI_HEAD_TIMEOUT_S", str(spec.head_timeout_s)),
        assign("RI_WORKER_TIMEOUT_S", str(spec.worker_timeout_s)),
        assign("RI_DRIVER_TIMEOUT_S", str(spec.driver_timeout_s)),
        assign("RI_STOP_TIMEOUT_S", str(spec.stop_timeout_s)),
    ]
    if spec.shared_dir is None:
        settings.append('export RI_SHARED_DIR="${RAYINFRA_SLURM_DIR:-$HOME/.rayinfra/slurm}"')
    else:
        settings.append(assign("RI_SHARED_DIR", spec.shared_dir))
    settings.append(assign("RI_STATE_DIR", spec.state_dir or ""))  # "": <temp dir>/state
    settings += [assign(k, v) for k, v in sorted(spec.env.items())]
    functions = [
        _command_function("ri_worker_command", "worker_command", spec.worker_command, exec_=True)
    ]
    if spec.driver_command is not None:
        functions.append(
            _command_function(
                "ri_driver_command", "driver_command", spec.driver_command, exec_=True
            )
        )
    lines = [
        "#!/bin/bash",
        "# shellcheck disable=SC2317  # functions run through traps, declare -f and srun",
        "# rayinfra cluster job: a Ray head on the first node, a worker on each other node,",
        "# rayinfra on the head. Rendered by rayinfra.slurm.render.render_cluster_job.",
        *(f"#SBATCH {option}" for option in sbatch),
        "",
        "# ---- settings (rendered; every value is shell-quoted) ----",
        *settings,
        "",
        "# ---- commands (rendered; {placeholders} are the quoted variables) ----",
        *functions,
        "",
    ]
    return "\n".join(lines) + _cluster_body()


# ------------------------------------------------------------------------------------------
# gpu_slurm task jobs


@dataclass(frozen=True)
class Placeholder:
    """A template placeholder: the payload keys that set it (first found wins), its default and
    its kind (``int``, ``count`` (>= 0), ``number``, ``time``, ``path``, ``name``, ``text``)."""

    keys: tuple[str, ...]
    default: str
    kind: str


#: the original bridge's placeholders (seed-system §4.7): ``${NAME}`` or ``${NAME:-default}``
TASK_PLACEHOLDERS: dict[str, Placeholder] = {
    "TASK_ID": Placeholder((), "", "name"),
    "TRAINING_METHOD": Placeholder(("method", "training_method"), "grpo", "name"),
    "MODULE_NAME": Placeholder(("module", "module_name"), "orchestrator", "text"),
    "MODEL_NAME": Placeholder(("model", "model_name"), "gpt2", "text"),
    "RL_SKILL_OVERRIDE": Placeholder(("skill", "rl_skill_override"), "", "text"),
    "NODES": Placeholder(("nodes",), "1", "int"),
    "GPUS": Placeholder(("gpus",), "1", "count"),
    "CPUS_PER_TASK": Placeholder(("cpus_per_task",), "8", "int"),
    "MEMORY_GB": Placeholder(("memory_gb",), "48", "int"),
    "TIME_LIMIT": Placeholder(("time_limit",), "04:00:00", "time"),
    "LOG_DIR": Placeholder(("log_dir",), "/workspace/logs", "path"),
    "WORKSPACE_DIR": Placeholder(("workspace_dir",), "/workspace", "path"),
    "RL_STEPS": Placeholder(("rl_steps", "steps"), "1000", "count"),
    "RL_N_ENVS": Placeholder(("rl_n_envs", "n_envs"), "4", "int"),
    "RL_LR": Placeholder(("rl_lr", "lr", "learning_rate"), "0.001", "number"),
    "RL_ENTROPY": Placeholder(("rl_entropy", "entropy"), "0.01", "number"),
    "RL_REPLAY_CAPACITY": Placeholder(("rl_replay_capacity",), "4096", "count"),
    "RL_REPLAY_BATCH": Placeholder(("rl_replay_batch",), "256", "count"),
    "RL_GRAD_CLIP": Placeholder(("rl_grad_clip",), "1.0", "number"),
    "RL_CHECKPOINT_DIR": Placeholder(("rl_checkpoint_dir",), "", "path"),
    "RL_CHECKPOINT_INTERVAL": Placeholder(("rl_checkpoint_interval",), "0", "count"),
    "RL_EARLY_STOP": Placeholder(("rl_early_stop",), "0", "count"),
    "RL_LOG_INTERVAL": Placeholder(("rl_log_interval",), "10", "count"),
    "RL_SKIP_GEPA": Placeholder(("rl_skip_gepa",), "0", "count"),
    "RL_GEPA_MODULES": Placeholder(("rl_gepa_modules",), "", "text"),
    "RL_LOG_JSONL": Placeholder(("rl_log_jsonl",), "", "path"),
    "MESH_ENDPOINT": Placeholder(("mesh_endpoint",), "", "text"),
    "MESH_NODE_ID": Placeholder(("mesh_node_id",), "9002", "count"),
    "MESH_DOMAIN": Placeholder(("mesh_domain",), "default", "text"),
    "SUPERVISOR_GRPC_ADDR": Placeholder(("supervisor_grpc_addr",), "http://127.0.0.1:7000", "text"),
}
_TASK_REF = re.compile(r"\$\{(" + "|".join(TASK_PLACEHOLDERS) + r")(?::-([^}\n]*))?\}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
#: the bash array holding the payload's argv in a rendered task script
TASK_ARGV_VAR = "RAYINFRA_TASK_ARGV"


def default_task_template() -> str:
    """The ``gpu_slurm`` template shipped with rayinfra (``rayinfra/slurm/templates/task.sbatch``)."""
    return resources.files("rayinfra.slurm").joinpath("templates/task.sbatch").read_text()


def _scalar(name: str, value: object, kind: str) -> str:
    if isinstance(value, bool):
        if kind in ("int", "count", "number"):
            raise InvalidArgumentError(name, f"must be a number, got {value!r}")
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value
    raise InvalidArgumentError(name, f"must be a string or a number, got {type(value).__name__}")


def _check_kind(name: str, kind: str, value: str) -> str:
    if kind in ("int", "count"):
        return str(integer(name, value, 1 if kind == "int" else 0))
    if kind == "number":
        return matching(name, value, _NUMBER, "must be a number")
    if kind == "time":
        return slurm_time(name, value)
    if kind == "name":
        if value == "":
            return value
        return matching(name, value, SIMPLE_NAME, "must be a simple name ([A-Za-z0-9_.+-])")
    return text_field(name, value, allow_empty=True)  # path, text


def _resolve(
    template_text: str, task_id: str, payload: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """``(values, where)``: each used placeholder's value and the field it came from."""
    used: dict[str, str | None] = {}
    for m in _TASK_REF.finditer(template_text):
        used.setdefault(m.group(1), m.group(2))
    values: dict[str, str] = {}
    where: dict[str, str] = {}
    for name, inline_default in used.items():
        if name == "TASK_ID":
            values[name], where[name] = text_field("task_id", task_id), "task_id"
            continue
        spec = TASK_PLACEHOLDERS[name]
        keys = (*spec.keys, name.lower())
        candidates = [(payload, "payload", k) for k in keys]
        candidates += [(settings, "settings", k) for k in (*keys, name)]
        found = next((c for c in candidates if c[0].get(c[2]) is not None), None)
        if found is not None:
            source, label, key = found
            field_name = f"{label}.{key}"
            raw = _scalar(field_name, source[key], spec.kind)
        else:
            raw = inline_default if inline_default is not None else spec.default
            field_name = f"the template's default for {name}"
        values[name] = _check_kind(field_name, spec.kind, raw)
        where[name] = field_name
    return values, where


def resolve_task_values(
    template_text: str, task_id: str, payload: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, str]:
    """The value of every placeholder ``template_text`` uses: the payload's (by the
    placeholder's keys, e.g. ``method``, or its lower-cased name), else ``settings``' (the same
    keys, or the placeholder's name), else the template's own ``${NAME:-default}``, else the
    original's default. Each is checked against its kind; a ValueError names the field."""
    return _resolve(template_text, task_id, payload, settings)[0]


def _sbatch_value(name: str, kind: str, value: str) -> str:
    """A placeholder's value inside an ``#SBATCH`` line (sbatch parses it, no shell)."""
    if kind in ("int", "count", "number", "time"):
        return value  # checked by _check_kind
    return matching(
        name, value, SBATCH_WORD, "must be a plain word in an #SBATCH line ([A-Za-z0-9_./~+@%:=,-])"
    )


def _payload_argv(payload: Mapping[str, Any]) -> list[str] | None:
    if "argv" in payload and "command" in payload:
        raise InvalidArgumentError(
            "payload.command", "give payload.argv or payload.command, not both"
        )
    key = "argv" if "argv" in payload else "command" if "command" in payload else None
    if key is None:
        return None
    value = payload[key]
    if isinstance(value, str):
        try:
            value = json_input.loads(value)
        except ValueError:
            raise InvalidArgumentError(
                f"payload.{key}",
                "must be a list of strings or a JSON string of one (never a shell command line)",
            ) from None
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise InvalidArgumentError(f"payload.{key}", "must be a non-empty list of strings")
    for i, arg in enumerate(value):
        if "\0" in arg:
            raise InvalidArgumentError(f"payload.{key}[{i}]", "must not contain NUL characters")
    if not value[0]:
        raise InvalidArgumentError(f"payload.{key}", "the executable (argv[0]) must not be empty")
    return list(value)


def _payload_env(payload: Mapping[str, Any]) -> dict[str, str]:
    env = payload.get("env")
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise InvalidArgumentError("payload.env", "must be an object of strings")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            raise InvalidArgumentError(f"payload.env.{key}", "is not a variable name")
        if not isinstance(value, str) or "\0" in value:
            raise InvalidArgumentError(f"payload.env.{key}", "must be a string without NUL")
        out[key] = value
    return out


def render_task_job(
    template_text: str,
    task_id: str,
    payload: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
) -> str:
    """A ``gpu_slurm`` task's sbatch script from ``template_text``.

    In ``#SBATCH`` lines (which sbatch reads without a shell) each ``${NAME[:-default]}`` is
    replaced by its validated value. Everywhere else the template is left as written: the
    values are assigned, shell-quoted and exported, right after the ``#SBATCH`` header, so the
    template's ``${NAME}`` expansions read them as data (never as code). The payload's ``argv``
    (or ``command``: a list, as for the ``shell`` handler) becomes the bash array
    ``RAYINFRA_TASK_ARGV``, its ``env`` exported variables, its ``cwd`` ``RAYINFRA_TASK_CWD``;
    ``RAYINFRA_TASK_ID`` is always set. Raises ValueError (:class:`InvalidArgumentError`) naming
    the field.
    """
    settings = settings or {}
    text_field("task_id", task_id)
    if not isinstance(payload, Mapping):
        raise InvalidArgumentError("payload", "must be an object")
    values, where = _resolve(template_text, task_id, payload, settings)
    argv = _payload_argv(payload)
    if argv is None and TASK_ARGV_VAR in template_text:
        raise InvalidArgumentError(
            "payload.argv", "is required by the template (a list of strings)"
        )
    env = _payload_env(payload)
    cwd = payload.get("cwd")
    if cwd is not None:
        text_field("payload.cwd", cwd)

    lines = template_text.splitlines()
    out: list[str] = []
    header_done = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            out.append(_TASK_REF.sub(lambda m: _sbatch_line_value(m, values, where), line))
            continue
        if not header_done and stripped and not stripped.startswith("#"):
            header_done = True
            out.extend(_task_prologue(values, task_id, argv, env, cwd))
        out.append(line)
    if not header_done:
        out.extend(_task_prologue(values, task_id, argv, env, cwd))
    return "\n".join(out) + "\n"


def _sbatch_line_value(
    m: re.Match[str], values: Mapping[str, str], where: Mapping[str, str]
) -> str:
    name = m.group(1)
    return _sbatch_value(where[name], TASK_PLACEHOLDERS[name].kind, values[name])


def _task_prologue(
    values: Mapping[str, str],
    task_id: str,
    argv: list[str] | None,
    env: Mapping[str, str],
    cwd: str | None,
) -> list[str]:
    out = ["# ---- task values (rendered by rayinfra; every value is shell-quoted) ----"]
    out += [assign(name, value) for name, value in values.items()]
    out.append(assign("RAYINFRA_TASK_ID", task_id))
    if argv is not None:
        out.append(f"{TASK_ARGV_VAR}=({' '.join(shlex.quote(a) for a in argv)})")
    if cwd is not None:
        out.append(assign("RAYINFRA_TASK_CWD", cwd))
    out += [assign(k, v) for k, v in sorted(env.items())]
    out.append("# ---- end of task values ----")
    return out

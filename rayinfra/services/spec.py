"""Service specs: what a service is, validated (pure: pydantic only, no Docker or processes).

A spec is written in TOML (a profile shipped in the package, the user's config, or
``ENV_MANAGER_CONFIG``) as a table per service::

    [redis]
    driver = "docker"
    image = "redis:7-alpine"
    ports = ["6379:6379"]            # "host:container", "ip:host:container" or a table
    volumes = ["redis_data:/data"]   # named volume or an absolute host path
    required = true
    health = { kind = "redis", port = 6379 }

Ports publish on 127.0.0.1 unless a port names another address. Per-call overrides address
fields by dotted path (``redis.env.X``, ``redis.health.interval_s``) with JSON values; see
:func:`apply_overrides`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayinfra import json_input

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

Condition = Literal["started", "healthy", "completed"]
ProbeKind = Literal["http", "tcp", "redis", "kafka", "command", "container"]
Driver = Literal["docker", "process"]

#: label keys put on everything rayinfra starts
LABEL_SERVICE = "rayinfra.service"
LABEL_CLUSTER = "rayinfra.cluster"
LABEL_SPEC = "rayinfra.spec"


class SpecError(ValueError):
    """A spec, profile or override is invalid; ``field`` names where (``redis.health.port``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Port(_Model):
    """A published port: ``host_ip:host -> container/protocol``."""

    host: int = Field(ge=1, le=65535)
    container: int = Field(ge=1, le=65535)
    host_ip: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"

    @classmethod
    def parse(cls, value: Any) -> Port:
        if isinstance(value, Port):
            return value
        if isinstance(value, int):
            return cls(host=value, container=value)
        if isinstance(value, Mapping):
            return cls.model_validate(dict(value))
        if not isinstance(value, str):
            raise ValueError(f"port {value!r} is neither a string, a number nor a table")
        text, _, proto = value.partition("/")
        parts = text.split(":")
        *ip, host, cont = parts * 2 if len(parts) == 1 else parts  # "port" is "port:port"
        try:
            if len(ip) > 1:
                raise ValueError
            host_port, cont_port = int(host), int(cont)
        except ValueError:
            raise ValueError(
                f"port {value!r} is not 'host:container', 'ip:host:container' or 'port'"
            ) from None
        host_ip = ip[0] if ip else "127.0.0.1"
        return cls(host=host_port, container=cont_port, host_ip=host_ip, protocol=proto or "tcp")  # type: ignore[arg-type]


class Dependency(_Model):
    service: str
    condition: Condition = "started"


class HealthCheck(_Model):
    """How to tell the service works. ``container`` trusts Docker's own HEALTHCHECK status."""

    kind: ProbeKind
    url: str | None = None  # http: the URL, 2xx = healthy
    host: str = "127.0.0.1"  # tcp, redis, kafka
    port: int | None = Field(default=None, ge=1, le=65535)
    send: str | None = None  # tcp: text to send after connecting (ZooKeeper: "srvr")
    command: list[str] | None = None  # command: argv; exit 0 = healthy
    in_container: bool = True  # command: run inside the container (docker) or on the host
    expect: str | None = None  # http body / command output must contain this text
    interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=3.0, gt=0)
    retries: int = Field(default=3, ge=1)  # consecutive failures before unhealthy
    start_period_s: float = Field(default=0.0, ge=0)  # failures in this window do not count

    @model_validator(mode="after")
    def _fields_for_kind(self) -> HealthCheck:
        if self.kind == "http" and not self.url:
            raise ValueError("an http health check needs url")
        if self.kind in ("tcp", "redis", "kafka") and self.port is None:
            raise ValueError(f"a {self.kind} health check needs port")
        if self.send is not None and self.kind != "tcp":
            raise ValueError("send is for tcp health checks")
        if self.kind == "command" and not self.command:
            raise ValueError("a command health check needs command (an argv list)")
        return self


class RestartPolicy(_Model):
    """Restart on exit or on unhealthy, owned by the health checker (Docker's is never used)."""

    on_failure: bool = True  # the process/container exited
    on_unhealthy: bool = True
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    jitter: float = Field(default=0.2, ge=0, le=1)  # +- fraction of each delay
    max_attempts: int = Field(default=5, ge=0)  # restarts allowed per window, then `failed`
    window_s: float = Field(default=600.0, gt=0)


class Resources(_Model):
    cpus: float | None = Field(default=None, gt=0)  # docker nano_cpus
    memory_bytes: int | None = Field(default=None, gt=0)
    gpus: int = Field(default=0, ge=-1)  # -1 = all GPUs
    gpu_device_ids: list[str] = Field(default_factory=list)

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", v.strip().lower())
            if not m:
                raise ValueError(f"memory {v!r} is not a size like '512m' or '2g'")
            scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2)]
            return int(float(m.group(1)) * scale)
        return v


#: what a running instance is made of (health too, for ``container`` checks: see fingerprint)
_INSTANCE_FIELDS = {"driver", "image", "command", "entrypoint", "argv", "cwd", "ports", "env"}
_INSTANCE_FIELDS |= {"volumes", "networks", "network_mode", "resources", "labels"}


class ServiceSpec(_Model):
    name: str
    driver: Driver = "docker"
    image: str | None = None  # docker
    command: list[str] | None = None  # docker: overrides the image's CMD
    entrypoint: list[str] | None = None  # docker: overrides the image's ENTRYPOINT
    argv: list[str] | None = None  # process: what to run (never a shell string)
    cwd: str | None = None  # process: working directory
    ports: list[Port] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    volumes: list[str] = Field(default_factory=list)  # "name:/path[:ro]" or "/abs:/path[:ro]"
    networks: list[str] = Field(default_factory=list)  # created if missing
    network_mode: str | None = None  # e.g. "host"; excludes networks
    depends_on: list[Dependency] = Field(default_factory=list)
    health: HealthCheck | None = None
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    required: bool = False
    resources: Resources = Field(default_factory=Resources)
    stop_timeout_s: float = Field(default=10.0, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"service name {v!r} must be lower-case letters, digits, '.', '_' or '-'"
            )
        return v

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("ports must be a list")
        return [Port.parse(p) for p in v]

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if isinstance(v, list):  # the original's ["K=V", ...]
            out = {}
            for item in v:
                k, sep, val = str(item).partition("=")
                if not sep or not k:
                    raise ValueError(f"environment entry {item!r} is not KEY=VALUE")
                out[k] = val
            return out
        if isinstance(v, Mapping):
            return {
                str(k): val if isinstance(val, str) else json.dumps(val) for k, val in v.items()
            }
        return v

    @field_validator("depends_on", mode="before")
    @classmethod
    def _deps(cls, v: Any) -> Any:
        if isinstance(v, Mapping):  # {redis = "healthy"}
            return [{"service": k, "condition": c} for k, c in v.items()]
        if isinstance(v, list):
            return [{"service": d} if isinstance(d, str) else d for d in v]
        return v

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        for item in v:
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
                raise ValueError(
                    f"volume {item!r} is not 'name:/container/path[:ro]' or "
                    "'/host/path:/container/path[:ro]'"
                )
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"volume {item!r}: mode must be ro or rw")
            if parts[0].startswith(".") or (("/" in parts[0]) and not parts[0].startswith("/")):
                raise ValueError(
                    f"volume {item!r}: a host path must be absolute (Docker rejects relative binds)"
                )
        return v

    @model_validator(mode="after")
    def _driver_fields(self) -> ServiceSpec:
        if self.driver == "docker":
            if not self.image:
                raise ValueError("a docker service needs image")
            if self.argv is not None:
                raise ValueError("argv is for process services; docker services use command")
            if self.network_mode and self.networks:
                raise ValueError("network_mode and networks exclude each other")
            if {self.network_mode, *self.networks} & {"bridge", "default"}:
                raise ValueError(
                    "Docker's default bridge network is not used: name a network of your own"
                )
        else:
            if not self.argv:
                raise ValueError("a process service needs argv (a list, never a shell string)")
            for key in ("image", "command", "entrypoint"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is for docker services")
            if self.volumes or self.networks or self.network_mode:
                raise ValueError("volumes and networks are for docker services")
            if self.health and self.health.kind == "container":
                raise ValueError("a process service has no container health status")
        for d in self.depends_on:
            if d.service == self.name:
                raise ValueError(f"{self.name} depends on itself")
        return self

    def fingerprint(self) -> str:
        """Hash of what the running instance is made of: a change means recreate, not adopt."""
        keep = self.model_dump(mode="json", include=_INSTANCE_FIELDS)
        if self.health is not None and self.health.kind == "container":
            keep["health"] = self.health.model_dump(mode="json")  # it becomes the HEALTHCHECK
        raw = json.dumps(keep, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def host_ports(self) -> list[int]:
        return [p.host for p in self.ports]


def _describe(name: str, e: ValidationError) -> SpecError:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    field = f"{name}.{loc}" if loc else name
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return SpecError(field, msg)


def parse_spec(name: str, table: Mapping[str, Any]) -> ServiceSpec:
    """Validate one service table; errors name ``<service>.<field>``."""
    data = dict(table)
    data.setdefault("name", name)
    if data["name"] != name:
        raise SpecError(f"{name}.name", f"does not match the table name {name!r}")
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as e:
        raise _describe(name, e) from None


def parse_specs(tables: Mapping[str, Any], where: str = "") -> dict[str, ServiceSpec]:
    out = {}
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise SpecError(f"{name}", f"must be a table{' in ' + where if where else ''}")
        out[name] = parse_spec(name, table)
    return out


def merge_tables(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` onto ``base`` (tables merge key by key; other values replace)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_tables(out[k], v)
        else:
            out[k] = v
    return out


def spec_table(spec: ServiceSpec) -> dict[str, Any]:
    """A spec back as a plain table (JSON types) that :func:`parse_spec` accepts."""
    return spec.model_dump(mode="json", exclude_none=True)


def apply_overrides(
    specs: Mapping[str, ServiceSpec], overrides: Mapping[str, str]
) -> dict[str, ServiceSpec]:
    """StartServices' ``overrides``: ``<service>.<field path>`` -> JSON value (a bare string
    that is not JSON is taken as a string). Unknown service or field -> :class:`SpecError`."""
    tables = {name: spec_table(s) for name, s in specs.items()}
    touched: set[str] = set()
    for key, raw in overrides.items():
        service, _, path = key.partition(".")
        if service not in tables:
            raise SpecError(key, f"unknown service {service!r}; known: {sorted(tables)}")
        if not path:
            raise SpecError(key, "needs a field path after the service name (redis.env.X)")
        try:
            value = json_input.loads(raw)
        except (TypeError, ValueError):
            value = raw
        _set_path(tables[service], path.split("."), value, key)
        touched.add(service)
    out = dict(specs)
    for name in touched:
        out[name] = parse_spec(name, tables[name])
    return out


_OPEN_MAPS = {"env", "labels"}  # fields whose keys are free-form


def _set_path(table: dict[str, Any], path: list[str], value: Any, key: str) -> None:
    node = table
    model: type[BaseModel] | None = ServiceSpec
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if model is None:  # inside a free-form map
            if not last:
                raise SpecError(key, f"{'.'.join(path[: i + 1])} is not a table")
            node[part] = value if isinstance(value, str) else json.dumps(value)
            return
        fields = model.model_fields
        if part not in fields:
            raise SpecError(key, f"unknown field {part!r}; known: {sorted(fields)}")
        if last:
            node[part] = value
            return
        model = None if part in _OPEN_MAPS else _model_of(fields[part].annotation)
        if model is None and part not in _OPEN_MAPS:
            raise SpecError(key, f"{part} has no sub-fields")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]


def _model_of(ann: Any) -> type[BaseModel] | None:
    """The model an annotation names (``Model`` or ``Model | None``), else None."""
    for arg in (ann, *(getattr(ann, "__args__", ()) or ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None

"""The Docker engine's data, both ways, as pure functions (no docker SDK, no I/O).

What the :class:`~rayinfra.services.drivers.docker.DockerDriver` sends to the engine and how it
reads what comes back, unit-testable without an engine:

- **Out:** container and network names, the network plan of a spec, the keyword arguments of
  ``containers.create`` (:func:`container_config`; GPU requests are plain dicts unless the
  driver passes the SDK's ``DeviceRequest`` type), the named volumes to create.
- **In:** ``docker inspect`` output as an :class:`~rayinfra.services.drivers.base.Instance`,
  Docker's RFC 3339 timestamps, ``docker pull`` JSON events folded into byte progress
  (:class:`PullTracker`), and the multiplexed log stream decoded into lines (from any object
  with ``read(n)``: the driver passes the HTTP response body, tests an in-memory one).

Error translation stays in the driver: it reads the SDK's exception types and reference parser.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from rayinfra.services.drivers import base
from rayinfra.services.spec import LABEL_SERVICE, ServiceSpec

#: network names that mean Docker's default bridge, which rayinfra never uses
DEFAULT_BRIDGE_NAMES = frozenset({"bridge", "default"})
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]+")
_NS = 1_000_000_000

# ------------------------------------------------------------------------------------------
# Out: names, networks, create arguments
# ------------------------------------------------------------------------------------------


def _sanitize(raw: str) -> str:
    return _NAME_BAD.sub("-", raw).strip("-.") or "rayinfra"


def container_name(cluster: str | None, service: str) -> str:
    """``rayinfra-<cluster>-<service>`` with anything Docker rejects replaced by ``-``."""
    return _sanitize(f"rayinfra-{cluster}-{service}" if cluster else f"rayinfra-{service}")


def network_name(cluster: str | None) -> str:
    """The per-cluster user-defined bridge network used when a spec names no network."""
    return _sanitize(f"rayinfra-{cluster}" if cluster else "rayinfra")


def plan_network(
    spec: ServiceSpec, cluster: str | None, default_network: str | None = None
) -> tuple[str | None, list[str]]:
    """(network_mode, user networks to join, the first being the primary one).

    Raises :class:`DriverError` for Docker's default bridge, which is never used.
    """
    for net in [spec.network_mode or "", *spec.networks]:
        if net in DEFAULT_BRIDGE_NAMES:
            raise base.DriverError(
                f"{spec.name}: Docker's default bridge network ({net!r}) is not used by "
                "rayinfra (no DNS between containers); hint: name a user network in "
                "`networks`, set network_mode = 'host', or leave both empty for "
                f"{network_name(cluster)!r}",
                reason="invalid_spec",
            )
    if spec.network_mode:
        return spec.network_mode, []
    if spec.networks:
        return None, list(spec.networks)
    if default_network in ("host", "none"):
        return default_network, []
    return None, [default_network or network_name(cluster)]


def _ns(seconds: float) -> int:
    return round(seconds * _NS)


def healthcheck_of(spec: ServiceSpec) -> dict[str, Any] | None:
    """Docker HEALTHCHECK for ``health.kind == "container"`` with a command (times in ns)."""
    h = spec.health
    if h is None or h.kind != "container" or not h.command:
        return None
    return {
        "test": ["CMD", *h.command],
        "interval": _ns(h.interval_s),
        "timeout": _ns(h.timeout_s),
        "retries": h.retries,
        "start_period": _ns(h.start_period_s),
    }


def device_requests_of(spec: ServiceSpec, device_request: Callable[..., Any] = dict) -> list[Any]:
    """GPU requests (a count, -1 = all, or device ids), each made by ``device_request`` from the
    keyword arguments of the SDK's ``docker.types.DeviceRequest``: plain dicts by default, the
    SDK type in the driver (:data:`rayinfra.services.drivers.docker.create_kwargs`)."""
    r = spec.resources
    if r.gpu_device_ids:
        return [device_request(device_ids=list(r.gpu_device_ids), capabilities=[["gpu"]])]
    if r.gpus != 0:
        return [device_request(count=r.gpus, capabilities=[["gpu"]])]
    return []


def container_config(
    spec: ServiceSpec,
    labels: Mapping[str, str],
    name: str,
    network_mode: str | None,
    networks: Sequence[str],
    *,
    device_request: Callable[..., Any] = dict,
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` (without ``networking_config``); GPU
    requests are made by ``device_request`` (see :func:`device_requests_of`)."""
    kw: dict[str, Any] = {
        "image": spec.image,
        "name": name,
        "labels": dict(labels),
        "environment": dict(spec.env),
        "init": True,
        "detach": True,
    }
    if spec.command is not None:
        kw["command"] = list(spec.command)
    if spec.entrypoint is not None:
        kw["entrypoint"] = list(spec.entrypoint)
    # host / none / container:<id> modes publish nothing (Docker rejects port bindings there):
    # with host networking the service listens on its container ports on the host itself
    if spec.ports and not network_mode:
        ports: dict[str, list[tuple[str, int]]] = {}
        for p in spec.ports:
            ports.setdefault(f"{p.container}/{p.protocol}", []).append((p.host_ip, p.host))
        kw["ports"] = {k: v[0] if len(v) == 1 else v for k, v in ports.items()}
    if spec.volumes:
        binds = []
        for v in spec.volumes:
            parts = v.split(":")
            mode = parts[2] if len(parts) == 3 else "rw"
            binds.append(f"{parts[0]}:{parts[1]}:{mode}")
        kw["volumes"] = binds
    if spec.resources.cpus is not None:
        kw["nano_cpus"] = _ns(spec.resources.cpus)
    if spec.resources.memory_bytes is not None:
        kw["mem_limit"] = spec.resources.memory_bytes
    gpus = device_requests_of(spec, device_request)
    if gpus:
        kw["device_requests"] = gpus
    hc = healthcheck_of(spec)
    if hc is not None:
        kw["healthcheck"] = hc
    if network_mode:
        kw["network_mode"] = network_mode
    elif networks:
        kw["network"] = networks[0]
    return kw


def named_volumes(spec: ServiceSpec) -> list[str]:
    """Volume sources that are names (not absolute host paths)."""
    return [v.split(":")[0] for v in spec.volumes if not v.startswith("/")]


# ------------------------------------------------------------------------------------------
# In: timestamps, inspect output, pull progress
# ------------------------------------------------------------------------------------------

_TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_docker_time(text: str | None) -> float | None:
    """RFC3339 / RFC3339Nano (``2024-05-01T10:00:00.123456789Z``) -> unix seconds, keeping the
    fraction; Docker's zero time (year 1) and anything unparsable -> None."""
    if not text:
        return None
    m = _TS_RE.match(text.strip())
    if not m:
        return None
    year, mon, day, hh, mm, ss, frac, tz = m.groups()
    if int(year) <= 1:
        return None
    offset = 0
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    whole_s = datetime(
        int(year), int(mon), int(day), int(hh), int(mm), int(ss), tzinfo=timezone.utc
    ).timestamp()
    return whole_s - offset + (float("0." + frac) if frac else 0.0)


def split_log_line(line: str) -> tuple[float | None, str]:
    """``"<RFC3339Nano> message"`` (docker logs with timestamps) -> (unix seconds, message)."""
    ts, sep, rest = line.partition(" ")
    t = parse_docker_time(ts)
    if t is None:
        return None, line
    return t, rest if sep else ""


_STATES: dict[str, base.InstanceState] = {
    "created": "created",
    "running": "running",
    "paused": "running",
    "restarting": "running",
    "removing": "exited",
    "exited": "exited",
    "dead": "exited",
}


def instance_from_inspect(data: Mapping[str, Any]) -> base.Instance:
    """An :class:`Instance` from ``docker inspect`` output."""
    state = data.get("State") or {}
    labels = dict((data.get("Config") or {}).get("Labels") or {})
    st = _STATES.get(str(state.get("Status", "")), "exited")
    health = (state.get("Health") or {}).get("Status") or None
    ports = _host_ports((data.get("NetworkSettings") or {}).get("Ports"))
    if not ports:  # host mode keeps the requested bindings only here
        ports = _host_ports((data.get("HostConfig") or {}).get("PortBindings"))
    pid = int(state.get("Pid") or 0)
    return base.Instance(
        id=str(data.get("Id", "")),
        service=labels.get(LABEL_SERVICE, ""),
        driver="docker",
        state=st,
        labels=labels,
        started_at=parse_docker_time(state.get("StartedAt")),
        exit_code=int(state.get("ExitCode", 0)) if st == "exited" else None,
        health=health,
        ports=tuple(sorted(ports)),
        pid=pid if pid > 0 else None,
    )


def usage_from_stats(stats: Mapping[str, Any], mono: float, wall: float) -> base.Usage:
    """One ``docker stats`` sample (``stream=False``) as a :class:`Usage` taken at monotonic
    ``mono`` (moved back to when the engine sampled, by ``read`` against ``wall``, at most 2 s).

    Memory excludes the page cache as ``docker stats`` shows it (cgroup v2 ``inactive_file``,
    v1 ``total_inactive_file``, else ``cache``). Network: the container's own interfaces
    (``networks``), scope ``service``; a container without any there (``network_mode`` host or
    none) gets rx/tx 0 and scope ``""``: the driver reads its namespace instead."""
    at = mono
    sampled = parse_docker_time(stats.get("read"))
    if sampled is not None:  # when the engine took the sample, not when it reached us
        at -= min(max(wall - sampled, 0.0), 2.0)
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    mem = stats.get("memory_stats") or {}
    used = int(mem.get("usage") or 0)
    detail = mem.get("stats") or {}
    for key in ("inactive_file", "total_inactive_file", "cache"):
        if key in detail:
            used -= int(detail[key] or 0)
            break
    networks = stats.get("networks") or {}
    return base.Usage(
        at=at,
        cpu_time_s=int(cpu.get("total_usage") or 0) / _NS,
        memory_bytes=max(0, used),
        rx_bytes=sum(int(n.get("rx_bytes") or 0) for n in networks.values()),
        tx_bytes=sum(int(n.get("tx_bytes") or 0) for n in networks.values()),
        network_scope="service" if networks else "",
    )


def _host_ports(bindings_by_port: Mapping[str, Any] | None) -> set[int]:
    """The host ports of a ``{"6379/tcp": [{"HostPort": "6379"}, ...]}`` map."""
    return {
        int(b["HostPort"])
        for bindings in (bindings_by_port or {}).values()
        for b in bindings or ()
        if b.get("HostPort")
    }


@dataclass
class _Layer:
    total: int = 0
    downloaded: int = 0
    extracted: int = 0
    skipped: bool = False


@dataclass
class PullTracker:
    """Folds ``docker pull`` JSON events into image-level byte progress.

    Layers that already exist are not counted; a layer's size is known from its first
    ``progressDetail.total``. ``downloading`` reports bytes downloaded over the summed layer
    sizes; ``extracting`` bytes extracted over the same total; :meth:`complete` reports
    ``current == total``.
    """

    image: str
    layers: dict[str, _Layer] = field(default_factory=dict)
    phase: Literal["downloading", "extracting"] = "downloading"
    _last: tuple[str, int, int] | None = None

    def total(self) -> int:
        return sum(la.total for la in self.layers.values() if not la.skipped)

    def feed(self, event: Mapping[str, Any]) -> base.PullProgress | None:
        """Account for one event; a new :class:`PullProgress` when the numbers changed."""
        status = str(event.get("status") or "")
        lid = event.get("id")
        detail = event.get("progressDetail") or {}
        cur = int(detail.get("current") or 0)
        tot = int(detail.get("total") or 0)
        if not lid or not isinstance(lid, str):
            return None
        if status.startswith(("Pulling from", "Digest", "Status")):
            return None
        layer = self.layers.setdefault(lid, _Layer())
        if status == "Already exists":
            layer.skipped = True
            return None
        if status == "Downloading":
            if tot > 0:
                layer.total = tot
            layer.downloaded = min(cur, layer.total) if layer.total else cur
        elif status in ("Verifying Checksum", "Download complete"):
            layer.downloaded = layer.total
        elif status == "Extracting":
            self.phase = "extracting"
            if tot > 0 and not layer.total:
                layer.total = tot
            layer.downloaded = layer.total
            layer.extracted = min(cur, layer.total) if layer.total else cur
        elif status == "Pull complete":
            layer.downloaded = layer.extracted = layer.total
        else:  # "Pulling fs layer", "Waiting", ...
            return None
        return self._progress()

    def _progress(self) -> base.PullProgress | None:
        live = [la for la in self.layers.values() if not la.skipped]
        downloading = self.phase == "downloading"
        current = sum(la.downloaded if downloading else la.extracted for la in live)
        total = self.total()
        key = (self.phase, current, total)
        if key == self._last:
            return None
        self._last = key
        return base.PullProgress(self.image, self.phase, current, total)

    def complete(self, message: str = "") -> base.PullProgress:
        total = self.total()
        return base.PullProgress(self.image, "complete", total, total, message)


# ------------------------------------------------------------------------------------------
# Log stream decoding (over any object with ``read(n)``; the driver hands in the response body)
# ------------------------------------------------------------------------------------------

_STREAMS: dict[int, Literal["stdout", "stderr"]] = {1: "stdout", 2: "stderr"}


def _read_full(raw: Any, n: int) -> bytes:
    """Exactly ``n`` bytes from an HTTP response body (fewer only at EOF)."""
    buf = b""
    while len(buf) < n:
        data = raw.read(n - len(buf))
        if not data:
            break
        buf += data
    return buf


def _log_frames(raw: Any, tty: bool) -> Iterator[tuple[int, bytes]]:
    """Whole multiplexed frames ``(stream id, payload)`` read from the logs response body
    (urllib3 undoes the chunked transfer encoding); a TTY container's stream is all stdout."""
    if tty:
        while True:
            data = raw.read(65536)
            if not data:
                return
            yield 1, data
    while True:
        header = _read_full(raw, 8)
        if len(header) < 8:
            return
        stream_id, size = struct.unpack(">BxxxL", header)
        yield stream_id, _read_full(raw, size) if size else b""


def _log_lines(frames: Iterator[tuple[int, bytes]]) -> Iterator[base.LogLine]:
    """Frames -> lines. Each docker log message is ``<timestamp> <text>\\n``; a message split
    into several frames (no trailing newline: Docker's 16 KiB partial messages) is joined and
    keeps its first timestamp."""
    pending: dict[Literal["stdout", "stderr"], tuple[float, bytes]] = {}
    last_ts = 0.0
    for stream_id, payload in frames:
        name = _STREAMS.get(stream_id, "stdout")
        pieces = payload.split(b"\n")
        for i, raw in enumerate(pieces):
            terminated = i < len(pieces) - 1
            if not terminated and not raw:
                break
            ts, message = split_log_line(raw.decode(errors="replace"))
            if ts is None:
                ts = last_ts or time.time()
            last_ts = ts
            body = message.encode()
            if name in pending:
                first_ts, prefix = pending.pop(name)
                ts, body = first_ts, prefix + body
            if terminated:
                yield base.LogLine(ts, name, body.decode(errors="replace").removesuffix("\r"))
            else:
                pending[name] = (ts, body)
    for name, (ts, body) in pending.items():
        yield base.LogLine(ts, name, body.decode(errors="replace"))

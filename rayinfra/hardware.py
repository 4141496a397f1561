"""Host hardware detection and its translation into ``ray start`` arguments.

The module is split into a small I/O edge and a pure core:

* I/O edge (injectable for tests): :func:`probe_nvml` (``pynvml``, from the
  ``nvidia-ml-py`` package), :func:`probe_nvidia_smi` (runs :data:`NVIDIA_SMI_ARGV`
  through :mod:`subprocess` with a timeout) and :func:`detect`, which also reads
  ``/proc/meminfo`` and cgroup v2 limits below configurable roots.
* Pure core: :func:`parse_nvidia_smi_csv`, :func:`parse_meminfo_total`,
  :func:`parse_cpu_max`, :func:`parse_memory_max`, :func:`accelerator_type`,
  :func:`node_labels`, :func:`node_resources`, :func:`ray_start_args` and
  :func:`format_report`.

Nothing here imports Ray; the label/resource validation mirrors the rules that
``ray start`` applies (Kubernetes-style label syntax, reserved ``ray.io/`` keys,
whole-number custom resource quantities).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "ACCELERATOR_LABEL",
    "GPU_COUNT_LABEL",
    "GPU_MEMORY_LABEL",
    "NVIDIA_SMI_ARGV",
    "NVIDIA_SMI_TIMEOUT_S",
    "ROLE_LABEL",
    "GpuInfo",
    "HardwareInfo",
    "accelerator_type",
    "detect",
    "format_report",
    "node_labels",
    "node_resources",
    "parse_cpu_max",
    "parse_meminfo_total",
    "parse_memory_max",
    "parse_nvidia_smi_csv",
    "probe_nvidia_smi",
    "probe_nvml",
    "ray_start_args",
    "validate_label",
]

GIB = 1024**3
MIB = 1024**2

ROLE_LABEL = "rayinfra.io/role"
ACCELERATOR_LABEL = "rayinfra.io/accelerator-type"
GPU_MEMORY_LABEL = "rayinfra.io/gpu-memory-gb"
GPU_COUNT_LABEL = "rayinfra.io/gpu-count"

#: Custom resource carrying the total (whole) GiB of GPU memory on a node.
GPU_MEMORY_RESOURCE = "gpu_memory_gb"

#: The exact argv run by :func:`probe_nvidia_smi` (memory.total is in MiB).
NVIDIA_SMI_ARGV: tuple[str, ...] = (
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,uuid,compute_cap,utilization.gpu",
    "--format=csv,noheader,nounits",
)
#: Seconds before a hung ``nvidia-smi`` (e.g. a wedged driver) is abandoned.
NVIDIA_SMI_TIMEOUT_S = 10.0

_SMI_FIELDS = 6

# Kubernetes/Ray label syntax: a name or value is <= 63 chars of [A-Za-z0-9._-],
# starting and ending alphanumeric; a key may carry a DNS-subdomain prefix "p/".
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
_RESERVED_LABEL_PREFIX = "ray.io/"
# Resources that `ray start` sets from dedicated flags or reserves for itself.
_RESERVED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as reported by NVML or ``nvidia-smi``."""

    index: int
    name: str
    memory_bytes: int
    uuid: str = ""
    compute_capability: str = ""
    utilization_percent: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of this GPU."""
        return asdict(self)


@dataclass(frozen=True)
class HardwareInfo:
    """What :func:`detect` found on this host.

    ``cpu_count`` is the number of usable logical CPUs (affinity mask, capped by a
    cgroup v2 ``cpu.max`` quota), ``memory_bytes`` the total memory (capped by a
    cgroup v2 ``memory.max``), ``gpu_source`` one of ``"nvml"``, ``"nvidia-smi"``
    or ``"none"``, and ``probe_notes`` a human-readable account of each probe.
    """

    hostname: str
    cpu_count: int
    memory_bytes: int
    gpus: tuple[GpuInfo, ...]
    gpu_source: str
    probe_notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (GPUs and notes as lists)."""
        return {
            **asdict(self),
            "gpus": [g.to_dict() for g in self.gpus],
            "probe_notes": [*self.probe_notes],
        }


# --------------------------------------------------------------------------- #
# Accelerator names
# --------------------------------------------------------------------------- #

_BRAND_TOKENS = frozenset({"nvidia", "tesla", "geforce", "quadro"})
_PREFIX_TOKEN_RE = re.compile(r"[A-Z]+")  # "RTX", "PRO", "GTX"
_MODEL_TOKEN_RE = re.compile(r"[A-Z]*[0-9][A-Z0-9]*")  # "H100", "A10G", "4090", "L40S"
_VARIANT_TOKENS = {"ti": "Ti", "super": "SUPER", "ada": "Ada"}


def _sanitize_label_value(text: str) -> str:
    """Map arbitrary text to a valid label value (``"unknown"`` if nothing is left)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip())
    value = re.sub(r"-{2,}", "-", value)
    value = value.strip("._-")[:63].rstrip("._-")
    return value or "unknown"


def accelerator_type(gpu_name: str) -> str:
    """Normalise a GPU product name to a short label value.

    ``"NVIDIA H100 80GB HBM3"`` -> ``"H100"``, ``"NVIDIA A100-SXM4-40GB"`` ->
    ``"A100"``, ``"Tesla V100-SXM2-16GB"`` -> ``"V100"``, ``"NVIDIA GeForce RTX
    4090"`` -> ``"RTX-4090"``, ``"NVIDIA RTX A6000"`` -> ``"RTX-A6000"``. Names
    that do not look like ``[BRAND] [PREFIX ...] MODEL`` fall back to a sanitised
    form of the name without brand words. The result always matches the Ray
    label value syntax: 1-63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends.
    """
    tokens = gpu_name.split()
    while tokens and tokens[0].lower() in _BRAND_TOKENS:
        tokens = tokens[1:]

    parts: list[str] = []
    model_at = -1
    for i, token in enumerate(tokens):
        head = token.split("-", 1)[0]  # "A100-SXM4-40GB" -> "A100"
        if _MODEL_TOKEN_RE.fullmatch(head):
            parts.append(head)
            model_at = i
            break
        if _PREFIX_TOKEN_RE.fullmatch(token):
            parts.append(token)
            continue
        break
    if model_at >= 0:
        if "-" not in tokens[model_at]:
            for token in tokens[model_at + 1 :]:
                variant = _VARIANT_TOKENS.get(token.lower())
                if variant is None:
                    break
                parts.append(variant)
        return _sanitize_label_value("-".join(parts))
    return _sanitize_label_value(" ".join(tokens) or gpu_name)


# --------------------------------------------------------------------------- #
# Pure parsers
# --------------------------------------------------------------------------- #


def _smi_missing(field: str) -> bool:
    """True for nvidia-smi placeholders such as ``[N/A]`` or ``[Not Supported]``."""
    return field == "" or field.upper() == "N/A" or (field.startswith("[") and field.endswith("]"))


def parse_nvidia_smi_csv(text: str) -> list[GpuInfo]:
    """Parse the output of :data:`NVIDIA_SMI_ARGV`.

    Each non-blank line is ``index, name, memory.total (MiB), uuid, compute_cap,
    utilization.gpu``. Placeholder fields (``[N/A]``, ``[Not Supported]``, ...)
    become ``0`` / ``""``; surrounding spaces and blank lines are ignored. A comma
    inside the product name is tolerated (the outer fields are split off first).

    Raises:
        ValueError: for a malformed line; the message names its 1-based line number.
    """
    gpus: list[GpuInfo] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < _SMI_FIELDS:
            raise ValueError(
                f"nvidia-smi output line {lineno}: expected {_SMI_FIELDS} comma-separated "
                f"fields, got {len(fields)}: {line!r}"
            )
        index_s, *name_parts = fields[: len(fields) - 4]
        memory_s, uuid_s, cap_s, util_s = fields[len(fields) - 4 :]
        name, uuid, cap = (
            "" if _smi_missing(f) else f for f in (", ".join(name_parts), uuid_s, cap_s)
        )
        try:
            index = int(index_s)
            memory_mib = 0.0 if _smi_missing(memory_s) else float(memory_s)
            util = 0.0 if _smi_missing(util_s) else float(util_s)
        except ValueError as exc:
            raise ValueError(f"nvidia-smi output line {lineno}: {exc}: {line!r}") from None
        if index < 0 or memory_mib < 0 or not math.isfinite(memory_mib) or not math.isfinite(util):
            raise ValueError(f"nvidia-smi output line {lineno}: out-of-range value: {line!r}")
        gpus.append(GpuInfo(index, name, int(memory_mib * MIB), uuid, cap, util))
    return gpus


def parse_meminfo_total(text: str) -> int | None:
    """Return ``MemTotal`` in bytes from ``/proc/meminfo`` text, or None if absent."""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() != "MemTotal":
            continue
        fields = rest.split()
        if not fields or not fields[0].isdigit():
            return None
        unit = fields[1].lower() if len(fields) > 1 else ""
        multiplier = {"": 1, "b": 1, "kb": 1024, "mb": MIB, "gb": GIB}.get(unit)
        return None if multiplier is None else int(fields[0]) * multiplier
    return None


def parse_cpu_max(text: str) -> float | None:
    """Return the CPU quota (quota/period) of a cgroup v2 ``cpu.max``, None if unlimited.

    ``"150000 100000"`` -> ``1.5``; ``"max 100000"`` -> None. Unparseable -> None.
    """
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_memory_max(text: str) -> int | None:
    """Return the byte limit of a cgroup v2 ``memory.max``, None for ``max``/garbage."""
    value = text.strip()
    return int(value) if value.isdigit() else None


# --------------------------------------------------------------------------- #
# I/O edge: cgroups and /proc
# --------------------------------------------------------------------------- #


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cgroup_dirs(proc_root: str, cgroup_root: str) -> Iterator[Path]:
    """Yield this process's cgroup v2 directory and its ancestors up to the root.

    The directory comes from the ``0::<path>`` line of ``<proc_root>/self/cgroup``
    (``/`` when absent, which is what a container with a cgroup namespace sees).
    """
    rel = "/"
    text = _read_text(Path(proc_root) / "self" / "cgroup")
    if text is not None:
        for line in text.splitlines():
            if line.startswith("0::"):
                rel = line[3:].strip() or "/"
                break
    parts = [p for p in PurePosixPath(rel).parts if p not in ("/", "", ".", "..")]
    root = Path(cgroup_root)
    for depth in range(len(parts), -1, -1):
        yield root.joinpath(*parts[:depth])


def _cgroup_limit(
    proc_root: str, cgroup_root: str, filename: str, parse: Callable[[str], float | None]
) -> tuple[float | None, Path | None]:
    """Return the tightest limit in ``filename`` along the cgroup chain and where it was."""
    best: float | None = None
    where: Path | None = None
    for directory in _cgroup_dirs(proc_root, cgroup_root):
        text = _read_text(directory / filename)
        limit = None if text is None else parse(text)
        if limit is not None and (best is None or limit < best):
            best, where = limit, directory / filename
    return best, where


def _detect_cpus(proc_root: str, cgroup_root: str) -> tuple[int, str]:
    sched_getaffinity = getattr(os, "sched_getaffinity", None)
    if sched_getaffinity is not None:
        available = len(sched_getaffinity(0))
        source = "sched_getaffinity"
    else:  # pragma: no cover - non-Linux
        available = os.cpu_count() or 1
        source = "os.cpu_count"
    quota, where = _cgroup_limit(proc_root, cgroup_root, "cpu.max", parse_cpu_max)
    count = max(1, available)
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    note = f"cpu: {count} usable ({source}: {available}"
    note += f", cgroup quota {quota:g} at {where})" if quota is not None else ", no cgroup quota)"
    return count, note


def _detect_memory(proc_root: str, cgroup_root: str) -> tuple[int, str]:
    text = _read_text(Path(proc_root) / "meminfo")
    total = None if text is None else parse_meminfo_total(text)
    source = "meminfo"
    if total is None:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        source = "sysconf"
    limit, where = _cgroup_limit(proc_root, cgroup_root, "memory.max", parse_memory_max)
    note = f"memory: {total / GIB:.1f} GiB ({source})"
    if limit is not None and limit < total:
        total = int(limit)
        note += f", capped to {total / GIB:.1f} GiB by {where}"
    return total, note


# --------------------------------------------------------------------------- #
# I/O edge: GPU probes
# --------------------------------------------------------------------------- #


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _error_note(prefix: str, exc: BaseException) -> str:
    detail = str(exc).strip()
    return f"{prefix}: {type(exc).__name__}" + (f": {detail}" if detail else "")


def _nvml_device(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    memory = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
    # The remaining fields are optional: older drivers or some boards raise
    # NVMLError_NotSupported / FunctionNotFound for them.
    uuid = cap = ""
    util = 0.0
    with suppress(Exception):
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    with suppress(Exception):
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        cap = f"{int(major)}.{int(minor)}"
    with suppress(Exception):
        util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    return GpuInfo(index, name, memory, uuid, cap, util)


def probe_nvml(nvml: Any | None = None) -> tuple[list[GpuInfo], str]:
    """List GPUs through NVML; never raises.

    Args:
        nvml: a ``pynvml``-like module; imported from ``nvidia-ml-py`` when None.

    Returns:
        ``(gpus, note)``; on any import or NVML failure ``([], note)`` where the note
        names the error. ``nvmlShutdown`` is always called once ``nvmlInit`` succeeded.
    """
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError as exc:
            return [], _error_note("nvml: pynvml (nvidia-ml-py) not importable", exc)
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return [], _error_note("nvml", exc)
    gpus: list[GpuInfo] = []
    note = ""
    try:
        count = int(nvml.nvmlDeviceGetCount())
        gpus = [_nvml_device(nvml, i) for i in range(count)]
        note = f"nvml: {len(gpus)} GPU(s)"
        with suppress(Exception):  # informational only
            note += f", driver {_text(nvml.nvmlSystemGetDriverVersion())}"
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        gpus = []
        note = _error_note("nvml", exc)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
            note += "; " + _error_note("nvmlShutdown", exc)
    return gpus, note


def _run_subprocess(argv: Sequence[str]) -> str:
    """Run ``argv`` with :data:`NVIDIA_SMI_TIMEOUT_S`; return stdout, raise on failure."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc.stdout


def _first_line(text: object) -> str:
    lines = _text(text).splitlines() if isinstance(text, str | bytes) else []
    return next((line.strip() for line in lines if line.strip()), "")


def probe_nvidia_smi(
    run: Callable[[Sequence[str]], str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[list[GpuInfo], str]:
    """List GPUs by running :data:`NVIDIA_SMI_ARGV`; never raises.

    Args:
        run: executes an argv and returns its stdout, raising
            :class:`subprocess.CalledProcessError` / :class:`subprocess.TimeoutExpired` /
            :class:`OSError` on failure. Defaults to :mod:`subprocess` with
            :data:`NVIDIA_SMI_TIMEOUT_S`.
        which: locates the binary on PATH (:func:`shutil.which`).

    Returns:
        ``(gpus, note)``; a missing binary, non-zero exit, timeout or unparseable
        output gives ``([], note)``.
    """
    if which(NVIDIA_SMI_ARGV[0]) is None:
        return [], "nvidia-smi: not found on PATH"
    runner = _run_subprocess if run is None else run
    try:
        out = runner(NVIDIA_SMI_ARGV)
    except subprocess.TimeoutExpired as exc:
        return [], f"nvidia-smi: timed out after {exc.timeout:g}s"
    except subprocess.CalledProcessError as exc:
        detail = _first_line(exc.stderr) or _first_line(exc.output)
        return [], f"nvidia-smi: exit status {exc.returncode}" + (f": {detail}" if detail else "")
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return [], _error_note("nvidia-smi", exc)
    try:
        gpus = parse_nvidia_smi_csv(out)
    except ValueError as exc:
        return [], f"nvidia-smi: unparseable output: {exc}"
    if not gpus:
        return [], "nvidia-smi: ran but listed no GPUs"
    return gpus, f"nvidia-smi: {len(gpus)} GPU(s)"


def detect(
    *,
    nvml: Any | None = None,
    run_smi: Callable[[Sequence[str]], str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    proc_root: str = "/proc",
    cgroup_root: str = "/sys/fs/cgroup",
) -> HardwareInfo:
    """Probe this host: CPUs, memory (cgroup v2 aware) and NVIDIA GPUs.

    GPUs come from NVML first; if that yields none, ``nvidia-smi`` is tried. Finding
    no GPU is a normal result (``gpu_source == "none"``), explained in ``probe_notes``.
    The keyword arguments are injection points for tests.
    """
    cpu_count, cpu_note = _detect_cpus(proc_root, cgroup_root)
    memory_bytes, memory_note = _detect_memory(proc_root, cgroup_root)
    notes = [cpu_note, memory_note]

    gpus, note = probe_nvml(nvml)
    notes.append(note)
    source = "nvml"
    if not gpus:
        gpus, note = probe_nvidia_smi(run_smi, which)
        notes.append(note)
        source = "nvidia-smi" if gpus else "none"
    return HardwareInfo(
        hostname=socket.gethostname(),
        cpu_count=cpu_count,
        memory_bytes=memory_bytes,
        gpus=tuple(sorted(gpus, key=lambda g: g.index)),
        gpu_source=source,
        probe_notes=tuple(notes),
    )


# --------------------------------------------------------------------------- #
# Pure: labels, resources, ray start argv, report
# --------------------------------------------------------------------------- #


def validate_label(key: str, value: str) -> None:
    """Check one node label against Ray's rules.

    Keys are ``[prefix/]name`` (prefix: DNS subdomain <= 253 chars; name: <= 63 chars
    of ``[A-Za-z0-9._-]``, alphanumeric at both ends) and must not use the reserved
    ``ray.io/`` prefix. Values follow the name rule (empty is allowed).

    Raises:
        ValueError: naming the offending key.
    """
    if not isinstance(key, str) or not isinstance(value, str):
        raise ValueError(f"label {key!r}: key and value must be strings")
    if key.startswith(_RESERVED_LABEL_PREFIX):
        raise ValueError(f"label key {key!r}: the prefix {_RESERVED_LABEL_PREFIX!r} is reserved")
    prefix, _, name = key.rpartition("/")
    if "/" in key and (
        not prefix
        or len(prefix) > 253
        or not all(_DNS_LABEL_RE.fullmatch(part) for part in prefix.split("."))
    ):
        raise ValueError(f"label key {key!r}: invalid prefix {prefix!r} (DNS subdomain expected)")
    if not _LABEL_NAME_RE.fullmatch(name):
        raise ValueError(
            f"label key {key!r}: name must be 1-63 chars of [A-Za-z0-9._-], "
            "beginning and ending alphanumeric"
        )
    if value and not _LABEL_NAME_RE.fullmatch(value):
        raise ValueError(
            f"label {key!r}: value {value!r} must be at most 63 chars of [A-Za-z0-9._-], "
            "beginning and ending alphanumeric"
        )


def _validate_resource(name: str, quantity: float) -> None:
    if not isinstance(name, str) or not name or "," in name:
        raise ValueError(f"resource {name!r}: invalid name")
    if name in _RESERVED_RESOURCES or name.startswith("node:"):
        raise ValueError(f"resource {name!r}: reserved by Ray (use --num-cpus/--num-gpus)")
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
        raise ValueError(f"resource {name!r}: quantity must be a number, got {quantity!r}")
    if not math.isfinite(quantity) or quantity < 0 or not float(quantity).is_integer():
        raise ValueError(
            f"resource {name!r}: quantity must be a non-negative whole number, got {quantity!r}"
        )


def node_labels(hw: HardwareInfo, role: str) -> dict[str, str]:
    """Return the rayinfra node labels for ``hw``.

    ``role``, the accelerator type of the first GPU (``"none"`` without GPUs), the
    whole GiB of the smallest GPU (``"0"``) and the GPU count.

    Raises:
        ValueError: if ``role`` is not a valid label value.
    """
    labels = {
        ROLE_LABEL: role,
        ACCELERATOR_LABEL: accelerator_type(hw.gpus[0].name) if hw.gpus else "none",
        GPU_MEMORY_LABEL: str(min(g.memory_bytes for g in hw.gpus) // GIB) if hw.gpus else "0",
        GPU_COUNT_LABEL: str(len(hw.gpus)),
    }
    for key, value in labels.items():
        validate_label(key, value)
    return labels


def node_resources(hw: HardwareInfo) -> dict[str, float]:
    """Return custom numeric resources for ``hw``.

    ``{"gpu_memory_gb": N}`` where N sums each GPU's memory in whole GiB (Ray only
    accepts whole-number node resources); empty without GPUs. Ray adds the
    ``accelerator_type:<type>`` resource itself, so it is not included.
    """
    if not hw.gpus:
        return {}
    return {GPU_MEMORY_RESOURCE: float(sum(g.memory_bytes // GIB for g in hw.gpus))}


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def ray_start_args(
    hw: HardwareInfo,
    *,
    role: str = "head",
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    extra_labels: Mapping[str, str] | None = None,
    extra_resources: Mapping[str, float] | None = None,
) -> list[str]:
    """Build the hardware part of a ``ray start`` argv.

    Returns ``["--num-cpus=N", "--num-gpus=G", "--labels=k=v,...", "--resources={...}"]``
    with labels sorted by key and resources as compact sorted JSON; ``--resources`` is
    omitted when empty. ``num_cpus``/``num_gpus``/``extra_labels``/``extra_resources``
    override what was detected. A ``num_gpus`` below the detected count restricts the
    GPU-derived labels and resources to the first ``num_gpus`` GPUs; the GPU-count
    label always equals the advertised ``--num-gpus``.

    Raises:
        ValueError: for negative counts or an invalid label/resource (naming the key).
    """
    cpus = hw.cpu_count if num_cpus is None else num_cpus
    gpus = len(hw.gpus) if num_gpus is None else num_gpus
    if cpus < 0:
        raise ValueError(f"num_cpus must be >= 0, got {cpus}")
    if gpus < 0:
        raise ValueError(f"num_gpus must be >= 0, got {gpus}")
    view = replace(hw, gpus=hw.gpus[:gpus]) if gpus < len(hw.gpus) else hw

    labels = node_labels(view, role)
    labels[GPU_COUNT_LABEL] = str(gpus)
    labels.update(extra_labels or {})
    for key, value in labels.items():
        validate_label(key, value)

    resources = node_resources(view)
    resources.update(extra_resources or {})
    for name, quantity in resources.items():
        _validate_resource(name, quantity)

    args = [
        f"--num-cpus={cpus}",
        f"--num-gpus={gpus}",
        "--labels=" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)),
    ]
    if resources:
        payload = {k: _json_number(v) for k, v in resources.items()}
        args.append("--resources=" + json.dumps(payload, sort_keys=True, separators=(",", ":")))
    return args


def format_report(hw: HardwareInfo) -> str:
    """Render ``hw`` as a multi-line human-readable report, including probe notes."""
    lines = [
        f"host:   {hw.hostname}",
        f"cpus:   {hw.cpu_count}",
        f"memory: {hw.memory_bytes / GIB:.1f} GiB",
        f"gpus:   {len(hw.gpus)} (source: {hw.gpu_source})",
    ]
    for gpu in hw.gpus:
        details = [f"{gpu.memory_bytes / GIB:.1f} GiB"]
        if gpu.compute_capability:
            details.append(f"compute {gpu.compute_capability}")
        details.append(f"util {gpu.utilization_percent:g}%")
        if gpu.uuid:
            details.append(gpu.uuid)
        label = accelerator_type(gpu.name) if gpu.name else "unknown"
        lines.append(f"  [{gpu.index}] {gpu.name or '?'} ({label}): " + ", ".join(details))
    lines.append("probes:")
    lines.extend(f"  - {note}" for note in hw.probe_notes)
    if not hw.probe_notes:
        lines.append("  (none recorded)")
    return "\n".join(lines)

"""Unit tests for rayinfra.hardware.

Every GPU sample below (names, UUIDs, memory sizes, nvidia-smi output and NVML
answers) is SYNTHETIC: written by hand to resemble what real drivers report, not
captured from real hardware. The only real-machine test is
``test_detect_on_this_machine``, which probes the host running the tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rayinfra import hardware
from rayinfra.hardware import (
    ACCELERATOR_LABEL,
    GPU_COUNT_LABEL,
    GPU_MEMORY_LABEL,
    NVIDIA_SMI_ARGV,
    ROLE_LABEL,
    GpuInfo,
    HardwareInfo,
    accelerator_type,
    detect,
    format_report,
    node_labels,
    node_resources,
    parse_cpu_max,
    parse_meminfo_total,
    parse_memory_max,
    parse_nvidia_smi_csv,
    probe_nvidia_smi,
    probe_nvml,
    ray_start_args,
)
from tests.conftest import NVIDIA_DEVICE

MIB = 1024**2
GIB = 1024**3

# Synthetic: the H100 80GB HBM3 reports 81559 MiB (= 79.6 GiB) total memory.
H100_MIB = 81559
H100_NAME = "NVIDIA H100 80GB HBM3"

UUID_PREFIX = "GPU-00000000-1111-2222-3333-"  # synthetic

# Synthetic nvidia-smi output for two GPUs (same format as NVIDIA_SMI_ARGV produces).
SMI_TWO_GPUS = (
    "0, NVIDIA H100 80GB HBM3, 81559, GPU-00000000-1111-2222-3333-444444444444, 9.0, 3\n"
    "1, NVIDIA H100 80GB HBM3, 81559, GPU-00000000-1111-2222-3333-555555555555, 9.0, 97\n"
)


def no_which(_name: str) -> str | None:
    """shutil.which stand-in: nvidia-smi is absent from PATH."""
    return None


def fake_which(name: str) -> str | None:
    """shutil.which stand-in: nvidia-smi is "present"."""
    return f"/usr/bin/{name}"


# --------------------------------------------------------------------------- #
# Fake pynvml
# --------------------------------------------------------------------------- #


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


class FakeNVMLError_LibraryNotFound(FakeNVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


@dataclass
class FakeDevice:
    name: str | bytes
    total: int
    uuid: str | bytes = ""
    cap: tuple[int, int] = (9, 0)
    util: int = 0


@dataclass
class FakeNVML:
    """A minimal module-like object with the pynvml functions hardware.py uses."""

    devices: list[FakeDevice] = field(default_factory=list)
    init_error: Exception | None = None
    fail_on: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    NVMLError: type[Exception] = FakeNVMLError

    def _maybe_fail(self, fn: str) -> None:
        self.calls.append(fn)
        if fn in self.fail_on:
            raise self.fail_on[fn]

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._maybe_fail("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._maybe_fail("nvmlDeviceGetHandleByIndex")
        return self.devices[index]

    def nvmlDeviceGetName(self, h: FakeDevice) -> str | bytes:
        self._maybe_fail("nvmlDeviceGetName")
        return h.name

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice) -> SimpleNamespace:
        self._maybe_fail("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=h.total, free=h.total, used=0)

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> str | bytes:
        self._maybe_fail("nvmlDeviceGetUUID")
        return h.uuid

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeDevice) -> tuple[int, int]:
        self._maybe_fail("nvmlDeviceGetCudaComputeCapability")
        return h.cap

    def nvmlDeviceGetUtilizationRates(self, h: FakeDevice) -> SimpleNamespace:
        self._maybe_fail("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=h.util, memory=0)


def fake_h100s(n: int) -> list[FakeDevice]:
    return [
        FakeDevice(
            name=H100_NAME.encode() if i % 2 else H100_NAME,  # old pynvml returns bytes
            total=H100_MIB * MIB,
            uuid=f"GPU-synthetic-{i:04d}",
            util=10 * i,
        )
        for i in range(n)
    ]


def synthetic_host(n_gpus: int, *, cpus: int = 64) -> HardwareInfo:
    gpus = tuple(
        GpuInfo(i, H100_NAME, H100_MIB * MIB, f"GPU-synthetic-{i}", "9.0") for i in range(n_gpus)
    )
    return HardwareInfo(
        hostname="synthetic-node",
        cpu_count=cpus,
        memory_bytes=512 * GIB,
        gpus=gpus,
        gpu_source="nvml" if gpus else "none",
        probe_notes=("synthetic",),
    )


class FakeRun:
    """Records argv and returns canned nvidia-smi output or raises."""

    def __init__(self, out: str = "", exc: Exception | None = None) -> None:
        self.out = out
        self.exc = exc
        self.argvs: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.argvs.append(tuple(argv))
        if self.exc is not None:
            raise self.exc
        return self.out


@pytest.fixture
def empty_roots(tmp_path: Path) -> dict[str, str]:
    """Fake /proc and cgroup roots with just a meminfo (no cgroup limits)."""
    proc = tmp_path / "proc"
    cg = tmp_path / "cgroup"
    proc.mkdir()
    cg.mkdir()
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    return {"proc_root": str(proc), "cgroup_root": str(cg)}


# --------------------------------------------------------------------------- #
# nvidia-smi CSV parsing
# --------------------------------------------------------------------------- #


def test_parse_two_gpus() -> None:
    gpus = parse_nvidia_smi_csv(SMI_TWO_GPUS)
    assert gpus == [
        GpuInfo(0, H100_NAME, H100_MIB * MIB, "GPU-00000000-1111-2222-3333-444444444444", "9.0", 3),
        GpuInfo(
            1, H100_NAME, H100_MIB * MIB, "GPU-00000000-1111-2222-3333-555555555555", "9.0", 97
        ),
    ]


def test_parse_na_fields_blank_lines_and_spaces() -> None:
    text = (
        "\n"
        "   0 ,  Tesla V100-SXM2-16GB ,16160, [N/A], [Not Supported], [N/A]   \n"
        "\n\n"
        "1, NVIDIA A10G, [N/A], GPU-synthetic-a10g, 8.6, [Not Supported]\n"
        "  \n"
    )
    v100, a10g = parse_nvidia_smi_csv(text)
    assert v100 == GpuInfo(0, "Tesla V100-SXM2-16GB", 16160 * MIB, "", "", 0.0)
    assert a10g == GpuInfo(1, "NVIDIA A10G", 0, "GPU-synthetic-a10g", "8.6", 0.0)


def test_parse_empty_output() -> None:
    assert parse_nvidia_smi_csv("") == []
    assert parse_nvidia_smi_csv("\n  \n") == []


def test_parse_name_with_comma_is_kept_whole() -> None:
    (gpu,) = parse_nvidia_smi_csv("0, Synthetic GPU, Rev 2, 1024, GPU-x, 7.5, 0")
    assert gpu.name == "Synthetic GPU, Rev 2"
    assert gpu.memory_bytes == 1024 * MIB


@pytest.mark.parametrize(
    ("text", "lineno"),
    [
        ("0, NVIDIA L4, 23034, GPU-a, 8.9, 0\n\n1, NVIDIA L4, 23034\n", 3),
        ("x, NVIDIA L4, 23034, GPU-a, 8.9, 0\n", 1),
        ("0, NVIDIA L4, 23034, GPU-a, 8.9, 0\n1, NVIDIA L4, lots, GPU-b, 8.9, 0\n", 2),
        ("0, NVIDIA L4, -5, GPU-a, 8.9, 0\n", 1),
        ("garbage\n", 1),
    ],
)
def test_parse_malformed_line_names_line_number(text: str, lineno: int) -> None:
    with pytest.raises(ValueError, match=rf"line {lineno}\b"):
        parse_nvidia_smi_csv(text)


def test_nvidia_smi_argv_is_exact() -> None:
    assert NVIDIA_SMI_ARGV == (
        "nvidia-smi",
        "--query-gpu=index,name,memory.total,uuid,compute_cap,utilization.gpu",
        "--format=csv,noheader,nounits",
    )


# --------------------------------------------------------------------------- #
# accelerator_type
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA GeForce RTX 3080 Ti", "RTX-3080-Ti"),
        ("NVIDIA RTX A6000", "RTX-A6000"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX-6000-Ada"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000"),
        ("Quadro RTX 8000", "RTX-8000"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA A10G", "A10G"),
        ("  NVIDIA   H100   80GB HBM3 ", "H100"),
    ],
)
def test_accelerator_type_table(name: str, expected: str) -> None:
    assert accelerator_type(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA TITAN RTX", "TITAN-RTX"),
        ("NVIDIA Graphics Device", "Graphics-Device"),
        ("Weird/GPU (rev. 2)!", "Weird-GPU-rev.-2"),
        ("-._leading and trailing_.-", "leading-and-trailing"),
        ("", "unknown"),
        ("!!!", "unknown"),
    ],
)
def test_accelerator_type_sanitises_unknown(name: str, expected: str) -> None:
    assert accelerator_type(name) == expected


@pytest.mark.parametrize(
    "name", ["x" * 200, "NVIDIA " + "Ünïcode Ψ " * 20, "a" * 62 + "-b", "RTX " * 40]
)
def test_accelerator_type_always_valid_label_value(name: str) -> None:
    value = accelerator_type(name)
    assert 1 <= len(value) <= 63
    assert value[0].isalnum() and value[-1].isalnum()
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in value)
    hardware.validate_label("k", value)


# --------------------------------------------------------------------------- #
# NVML probe with a fake pynvml
# --------------------------------------------------------------------------- #


def test_probe_nvml_reads_devices_bytes_or_str() -> None:
    nvml = FakeNVML(devices=fake_h100s(2))
    gpus, note = probe_nvml(nvml)
    assert gpus == [
        GpuInfo(0, H100_NAME, H100_MIB * MIB, "GPU-synthetic-0000", "9.0", 0.0),
        GpuInfo(1, H100_NAME, H100_MIB * MIB, "GPU-synthetic-0001", "9.0", 10.0),
    ]
    assert note.startswith("nvml: 2 GPU(s)")
    assert nvml.calls[0] == "nvmlInit"
    assert nvml.calls[-1] == "nvmlShutdown"


def test_probe_nvml_accepts_simplenamespace_module() -> None:
    dev = FakeDevice(name=b"NVIDIA L4", total=23034 * MIB, uuid=b"GPU-synthetic-l4", cap=(8, 9))
    shutdowns: list[bool] = []
    module = SimpleNamespace(
        NVMLError=FakeNVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: shutdowns.append(True),
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: dev,
        nvmlDeviceGetName=lambda h: h.name,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=h.total),
        nvmlDeviceGetUUID=lambda h: h.uuid,
        nvmlDeviceGetCudaComputeCapability=lambda h: h.cap,
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=42),
        nvmlSystemGetDriverVersion=lambda: "999.99.99-synthetic",
    )
    gpus, note = probe_nvml(module)
    assert gpus == [GpuInfo(0, "NVIDIA L4", 23034 * MIB, "GPU-synthetic-l4", "8.9", 42.0)]
    assert note == "nvml: 1 GPU(s), driver 999.99.99-synthetic"
    assert shutdowns == [True]


def test_probe_nvml_init_error_does_not_raise_or_shutdown() -> None:
    nvml = FakeNVML(init_error=FakeNVMLError_LibraryNotFound())
    gpus, note = probe_nvml(nvml)
    assert gpus == []
    assert note == "nvml: FakeNVMLError_LibraryNotFound: NVML Shared Library Not Found"
    assert "nvmlShutdown" not in nvml.calls  # init never succeeded


@pytest.mark.parametrize(
    "failing", ["nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo"]
)
def test_probe_nvml_shutdown_even_when_device_call_raises(failing: str) -> None:
    nvml = FakeNVML(devices=fake_h100s(2), fail_on={failing: FakeNVMLError("GPU is lost")})
    gpus, note = probe_nvml(nvml)
    assert gpus == []
    assert "GPU is lost" in note
    assert nvml.calls.count("nvmlShutdown") == 1
    assert nvml.calls[-1] == "nvmlShutdown"


def test_probe_nvml_optional_fields_unsupported() -> None:
    unsupported = FakeNVMLError("Not Supported")
    nvml = FakeNVML(
        devices=fake_h100s(1),
        fail_on={
            "nvmlDeviceGetUUID": unsupported,
            "nvmlDeviceGetCudaComputeCapability": unsupported,
            "nvmlDeviceGetUtilizationRates": unsupported,
        },
    )
    gpus, _ = probe_nvml(nvml)
    assert gpus == [GpuInfo(0, H100_NAME, H100_MIB * MIB)]
    assert nvml.calls[-1] == "nvmlShutdown"


def test_probe_nvml_shutdown_error_is_reported_not_raised() -> None:
    nvml = FakeNVML(devices=fake_h100s(1))

    def bad_shutdown() -> None:
        raise FakeNVMLError("Uninitialized")

    nvml.nvmlShutdown = bad_shutdown  # type: ignore[method-assign]
    gpus, note = probe_nvml(nvml)
    assert len(gpus) == 1
    assert "nvmlShutdown: FakeNVMLError: Uninitialized" in note


def test_probe_nvml_default_import_never_raises() -> None:
    # Real pynvml: on this GPU-less machine it reports a library error; anywhere it
    # must return a (list, note) pair instead of raising.
    gpus, note = probe_nvml()
    assert isinstance(gpus, list)
    assert note.startswith("nvml")


# --------------------------------------------------------------------------- #
# nvidia-smi probe
# --------------------------------------------------------------------------- #


def test_probe_nvidia_smi_ok_uses_exact_argv() -> None:
    run = FakeRun(SMI_TWO_GPUS)
    gpus, note = probe_nvidia_smi(run, which=fake_which)
    assert [g.index for g in gpus] == [0, 1]
    assert note == "nvidia-smi: 2 GPU(s)"
    assert run.argvs == [NVIDIA_SMI_ARGV]


def test_probe_nvidia_smi_absent() -> None:
    run = FakeRun(SMI_TWO_GPUS)
    assert probe_nvidia_smi(run, which=no_which) == ([], "nvidia-smi: not found on PATH")
    assert run.argvs == []


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            subprocess.CalledProcessError(
                9, list(NVIDIA_SMI_ARGV), "", "NVIDIA-SMI has failed because it couldn't ...\n"
            ),
            "nvidia-smi: exit status 9: NVIDIA-SMI has failed because it couldn't ...",
        ),
        (
            subprocess.TimeoutExpired(list(NVIDIA_SMI_ARGV), 10.0),
            "nvidia-smi: timed out after 10s",
        ),
        (PermissionError(13, "Permission denied"), "nvidia-smi: PermissionError"),
    ],
)
def test_probe_nvidia_smi_failures(exc: Exception, expected: str) -> None:
    gpus, note = probe_nvidia_smi(FakeRun(exc=exc), which=fake_which)
    assert gpus == []
    assert note.startswith(expected)


def test_probe_nvidia_smi_garbage_and_empty_output() -> None:
    gpus, note = probe_nvidia_smi(FakeRun("oops\n"), which=fake_which)
    assert gpus == []
    assert "unparseable" in note and "line 1" in note
    assert probe_nvidia_smi(FakeRun("\n"), which=fake_which) == (
        [],
        "nvidia-smi: ran but listed no GPUs",
    )


def test_default_runner_reports_nonzero_exit_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_subprocess_run(argv: list[str], **kwargs: Any) -> SimpleNamespace:
        seen["argv"], seen["kwargs"] = argv, kwargs
        return SimpleNamespace(returncode=6, stdout="", stderr="No devices were found\n")

    monkeypatch.setattr(subprocess, "run", fake_subprocess_run)
    gpus, note = probe_nvidia_smi(which=fake_which)
    assert (gpus, note) == ([], "nvidia-smi: exit status 6: No devices were found")
    assert seen["argv"] == list(NVIDIA_SMI_ARGV)
    assert seen["kwargs"]["timeout"] == hardware.NVIDIA_SMI_TIMEOUT_S
    assert "shell" not in seen["kwargs"]

    def hanging_run(argv: list[str], **kwargs: Any) -> SimpleNamespace:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hanging_run)
    assert probe_nvidia_smi(which=fake_which)[1].startswith("nvidia-smi: timed out after")


# --------------------------------------------------------------------------- #
# detect()
# --------------------------------------------------------------------------- #


def test_detect_uses_nvml(empty_roots: dict[str, str]) -> None:
    run = FakeRun(SMI_TWO_GPUS)
    hw = detect(nvml=FakeNVML(devices=fake_h100s(8)), run_smi=run, which=fake_which, **empty_roots)
    assert hw.gpu_source == "nvml"
    assert len(hw.gpus) == 8
    assert hw.gpus[1].name == H100_NAME  # bytes decoded
    assert run.argvs == []  # no fallback needed
    assert any(n.startswith("nvml: 8 GPU(s)") for n in hw.probe_notes)
    json.dumps(hw.to_dict())  # JSON-able


def test_detect_falls_back_to_nvidia_smi(empty_roots: dict[str, str]) -> None:
    nvml = FakeNVML(init_error=FakeNVMLError("Driver Not Loaded"))
    run = FakeRun(SMI_TWO_GPUS)
    hw = detect(nvml=nvml, run_smi=run, which=fake_which, **empty_roots)
    assert hw.gpu_source == "nvidia-smi"
    assert [g.utilization_percent for g in hw.gpus] == [3.0, 97.0]
    assert run.argvs == [NVIDIA_SMI_ARGV]
    assert "nvml: FakeNVMLError: Driver Not Loaded" in hw.probe_notes
    assert "nvidia-smi: 2 GPU(s)" in hw.probe_notes


def test_detect_falls_back_when_nvml_sees_zero_gpus(empty_roots: dict[str, str]) -> None:
    hw = detect(nvml=FakeNVML(), run_smi=FakeRun(SMI_TWO_GPUS), which=fake_which, **empty_roots)
    assert hw.gpu_source == "nvidia-smi"
    assert len(hw.gpus) == 2


def test_detect_no_gpu_at_all(empty_roots: dict[str, str]) -> None:
    nvml = FakeNVML(init_error=FakeNVMLError_LibraryNotFound())
    hw = detect(nvml=nvml, run_smi=FakeRun(SMI_TWO_GPUS), which=no_which, **empty_roots)
    assert hw.gpus == ()
    assert hw.gpu_source == "none"
    assert "nvml: FakeNVMLError_LibraryNotFound: NVML Shared Library Not Found" in hw.probe_notes
    assert "nvidia-smi: not found on PATH" in hw.probe_notes
    report = format_report(hw)
    assert "source: none" in report
    assert "NVML Shared Library Not Found" in report
    assert "nvidia-smi: not found on PATH" in report


# --------------------------------------------------------------------------- #
# CPU / memory / cgroup v2
# --------------------------------------------------------------------------- #


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _detect_with(proc: Path, cg: Path) -> HardwareInfo:
    nvml = FakeNVML(init_error=FakeNVMLError("synthetic"))
    return detect(nvml=nvml, which=no_which, proc_root=str(proc), cgroup_root=str(cg))


def test_parse_cgroup_and_meminfo_helpers() -> None:
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("") is None
    assert parse_cpu_max("bogus 1") is None
    assert parse_memory_max("max\n") is None
    assert parse_memory_max("1073741824\n") == GIB
    assert parse_meminfo_total("MemFree: 5 kB\nMemTotal:  2048 kB\n") == 2048 * 1024
    assert parse_meminfo_total("nothing here") is None


@pytest.mark.parametrize(
    ("cpu_max", "expected_cap"),
    [
        ("150000 100000\n", 1),  # 1.5 CPUs -> floor 1
        ("50000 100000\n", 1),  # 0.5 CPUs -> min 1
        ("max 100000\n", None),  # no limit
        ("100000000 100000\n", None),  # 1000 CPUs: affinity is smaller
    ],
)
def test_cgroup_cpu_quota(tmp_path: Path, cpu_max: str, expected_cap: int | None) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    proc.mkdir()
    cg.mkdir()
    (proc / "meminfo").write_text("MemTotal: 1024 kB\n")
    (cg / "cpu.max").write_text(cpu_max)
    hw = _detect_with(proc, cg)
    expected = _affinity() if expected_cap is None else min(_affinity(), expected_cap)
    assert hw.cpu_count == expected


def test_cgroup_quota_on_nested_cgroup_path(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/kubepods/pod-synthetic/ctr\n")
    (proc / "meminfo").write_text("MemTotal: 8388608 kB\n")  # 8 GiB
    leaf = cg / "kubepods" / "pod-synthetic" / "ctr"
    leaf.mkdir(parents=True)
    (cg / "cpu.max").write_text("max 100000\n")
    (leaf / "cpu.max").write_text("max 100000\n")
    (cg / "kubepods" / "pod-synthetic" / "cpu.max").write_text("100000 100000\n")  # parent: 1
    (cg / "kubepods" / "memory.max").write_text(str(3 * GIB))
    (leaf / "memory.max").write_text("max\n")
    hw = _detect_with(proc, cg)
    assert hw.cpu_count == 1
    assert hw.memory_bytes == 3 * GIB


def test_memory_max_lower_than_memtotal_wins(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    proc.mkdir()
    cg.mkdir()
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    (cg / "memory.max").write_text(f"{2 * GIB}\n")
    hw = _detect_with(proc, cg)
    assert hw.memory_bytes == 2 * GIB
    assert any("capped" in n for n in hw.probe_notes)


@pytest.mark.parametrize("memory_max", ["max\n", f"{10**15}\n"])
def test_memory_max_unlimited_or_higher_is_ignored(tmp_path: Path, memory_max: str) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    proc.mkdir()
    cg.mkdir()
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\n")
    (cg / "memory.max").write_text(memory_max)
    assert _detect_with(proc, cg).memory_bytes == 16384000 * 1024


def test_memory_falls_back_to_sysconf_without_meminfo(tmp_path: Path) -> None:
    hw = _detect_with(tmp_path / "no-proc", tmp_path / "no-cgroup")
    assert hw.memory_bytes > 0
    assert hw.cpu_count == _affinity()
    assert any("sysconf" in n for n in hw.probe_notes)


# --------------------------------------------------------------------------- #
# Labels, resources, ray start argv
# --------------------------------------------------------------------------- #


def test_ray_start_args_no_gpu_host() -> None:
    hw = synthetic_host(0, cpus=4)
    assert ray_start_args(hw) == [
        "--num-cpus=4",
        "--num-gpus=0",
        "--labels=rayinfra.io/accelerator-type=none,rayinfra.io/gpu-count=0,"
        "rayinfra.io/gpu-memory-gb=0,rayinfra.io/role=head",
    ]
    assert node_resources(hw) == {}


def test_ray_start_args_8x_h100_host() -> None:
    hw = synthetic_host(8, cpus=192)
    assert ray_start_args(hw, role="worker") == [
        "--num-cpus=192",
        "--num-gpus=8",
        "--labels=rayinfra.io/accelerator-type=H100,rayinfra.io/gpu-count=8,"
        "rayinfra.io/gpu-memory-gb=79,rayinfra.io/role=worker",
        '--resources={"gpu_memory_gb":632}',
    ]


def test_node_labels_and_resources() -> None:
    hw = synthetic_host(2)
    mixed = HardwareInfo("h", 8, GIB, (*hw.gpus, GpuInfo(2, "NVIDIA L4", 23034 * MIB)), "nvml", ())
    assert node_labels(mixed, "worker") == {
        ROLE_LABEL: "worker",
        ACCELERATOR_LABEL: "H100",
        GPU_MEMORY_LABEL: "22",  # smallest GPU
        GPU_COUNT_LABEL: "3",
    }
    assert node_resources(mixed) == {"gpu_memory_gb": 79.0 + 79.0 + 22.0}


def test_ray_start_args_overrides_win() -> None:
    hw = synthetic_host(8, cpus=192)
    args = ray_start_args(
        hw,
        role="worker",
        num_cpus=16,
        num_gpus=2,
        extra_labels={"zone": "synthetic-a", GPU_MEMORY_LABEL: "80"},
        extra_resources={"gpu_memory_gb": 160, "nvlink": 1.0},
    )
    assert args == [
        "--num-cpus=16",
        "--num-gpus=2",
        "--labels=rayinfra.io/accelerator-type=H100,rayinfra.io/gpu-count=2,"
        "rayinfra.io/gpu-memory-gb=80,rayinfra.io/role=worker,zone=synthetic-a",
        '--resources={"gpu_memory_gb":160,"nvlink":1}',
    ]
    # Restricting GPUs without a resource override scales the derived resource.
    assert ray_start_args(hw, num_gpus=1)[-1] == '--resources={"gpu_memory_gb":79}'
    assert ray_start_args(hw, num_gpus=0)[1:] == [
        "--num-gpus=0",
        "--labels=rayinfra.io/accelerator-type=none,rayinfra.io/gpu-count=0,"
        "rayinfra.io/gpu-memory-gb=0,rayinfra.io/role=head",
    ]


@pytest.mark.parametrize(
    ("labels", "bad"),
    [
        ({"ray.io/accelerator-type": "H100"}, "ray.io/accelerator-type"),
        ({"bad key": "x"}, "bad key"),
        ({"-leading": "x"}, "-leading"),
        ({"x" * 64: "v"}, "x" * 64),
        ({"bad_prefix!/name": "v"}, "bad_prefix!/name"),
        ({"zone": "a,b"}, "zone"),
        ({"zone": "a=b"}, "zone"),
        ({"zone": "v" * 64}, "zone"),
        ({"zone": "trailing-"}, "zone"),
    ],
)
def test_label_validation_error_names_key(labels: dict[str, str], bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
        ray_start_args(synthetic_host(0), extra_labels=labels)


def test_invalid_role_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape(ROLE_LABEL)):
        ray_start_args(synthetic_host(0), role="head node")


def test_empty_label_value_is_allowed_like_ray() -> None:
    assert "team=" in ray_start_args(synthetic_host(0), extra_labels={"team": ""})[2]


@pytest.mark.parametrize(
    ("resources", "bad"),
    [
        ({"CPU": 4}, "CPU"),
        ({"node:__internal_head__": 1}, "node:__internal_head__"),
        ({"fractional": 1.5}, "fractional"),
        ({"negative": -1}, "negative"),
        ({"nan": float("nan")}, "nan"),
    ],
)
def test_resource_validation_error_names_key(resources: dict[str, float], bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        ray_start_args(synthetic_host(0), extra_resources=resources)


def test_negative_counts_rejected() -> None:
    with pytest.raises(ValueError, match="num_cpus"):
        ray_start_args(synthetic_host(0), num_cpus=-1)
    with pytest.raises(ValueError, match="num_gpus"):
        ray_start_args(synthetic_host(0), num_gpus=-1)


def test_ray_start_args_parse_like_ray_cli() -> None:
    # Mirror how `ray start` parses --labels (k=v pairs split on "," and "=") and
    # --resources (JSON) without importing Ray.
    args = ray_start_args(synthetic_host(8), extra_labels={"zone": "synthetic-a"})
    labels_arg = next(a for a in args if a.startswith("--labels="))[len("--labels=") :]
    pairs = [p.split("=") for p in labels_arg.split(",")]
    assert all(len(p) == 2 for p in pairs)
    assert dict(pairs)["zone"] == "synthetic-a"
    resources_arg = next(a for a in args if a.startswith("--resources="))
    resources = json.loads(resources_arg[len("--resources=") :])
    assert all(float(v).is_integer() for v in resources.values())


# --------------------------------------------------------------------------- #
# Report / serialisation
# --------------------------------------------------------------------------- #


def test_format_report_and_to_dict_with_gpus() -> None:
    hw = synthetic_host(2)
    report = format_report(hw)
    assert "synthetic-node" in report
    assert "gpus:   2 (source: nvml)" in report
    assert "[1] NVIDIA H100 80GB HBM3 (H100): 79.6 GiB, compute 9.0" in report
    assert "  - synthetic" in report
    data = hw.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["gpus"][0]["memory_bytes"] == H100_MIB * MIB
    assert data["probe_notes"] == ["synthetic"]


# --------------------------------------------------------------------------- #
# The real machine running the tests
# --------------------------------------------------------------------------- #


def test_detect_on_this_machine() -> None:
    hw = detect()
    assert hw.cpu_count >= 1
    assert hw.memory_bytes > 0
    assert hw.hostname
    assert len(hw.probe_notes) >= 3
    json.dumps(hw.to_dict())
    assert format_report(hw)
    ray_start_args(hw)  # detected values always produce valid arguments
    if NVIDIA_DEVICE.exists():  # test_detect_finds_the_gpus_of_this_machine runs instead
        pytest.skip(f"{NVIDIA_DEVICE} exists: this host may have an NVIDIA driver and real GPUs")
    assert hw.gpu_source == "none"
    assert hw.gpus == ()


@pytest.mark.gpu
def test_detect_finds_the_gpus_of_this_machine() -> None:
    """Where a real NVIDIA GPU is: detected, and advertised to Ray with its labels."""
    hw = detect()
    assert hw.gpu_source != "none" and len(hw.gpus) >= 1, format_report(hw)
    args = ray_start_args(hw)
    assert f"--num-gpus={len(hw.gpus)}" in args
    labels = next(a for a in args if a.startswith("--labels="))
    assert f"{ACCELERATOR_LABEL}=none" not in labels, labels
    # pinned to no GPU (as the test runtimes are), the node looks GPU-less
    pinned = ray_start_args(hw, num_gpus=0)
    assert "--num-gpus=0" in pinned
    assert f"{ACCELERATOR_LABEL}=none" in next(a for a in pinned if a.startswith("--labels="))

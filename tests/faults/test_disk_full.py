"""The state store's disk fills up under a running runtime, then space returns.

The store sits on a small tmpfs of its own (``state.db_file`` as an absolute path; the rest of
the state dir and Ray's files stay where they were), which the test fills with a file until
the kernel says ENOSPC. Submits are then refused with RESOURCE_EXHAUSTED / 507 naming the
store's directory and write nothing; the runtime keeps answering Health; the scheduler holds
finished tasks' results in memory until it can write them. Once the file is deleted, every
acknowledged task completes and new submits are accepted: 0 acknowledged tasks lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from rayinfra import AgentInfraSync, runtime
from rayinfra.api import stubs
from rayinfra.config import dial_addr, load_config
from rayinfra.errors import StorageFullError
from tests.conftest import make_runtime_spec

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test (the machine's own mount table; root only)."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = where / "filler"
    chunk = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last partial block too
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def wait_for_log(logs: Path, text: str, timeout_s: float) -> bool:
    """Whether ``text`` shows up in a file under ``logs`` (Ray's session logs) in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for f in logs.rglob("*.err"):
            with contextlib.suppress(OSError), open(f, errors="replace") as fh:
                if text in fh.read():
                    return True
        time.sleep(0.5)
    return False


def batch(tag: str, n: int) -> list[opb.SubmitTaskRequest]:
    return [opb.SubmitTaskRequest(id=f"{tag}-{i}", payload={"type": "noop"}) for i in range(n)]


def test_a_full_state_disk_refuses_submits_then_everything_resumes(small_disk: Path) -> None:
    spec = make_runtime_spec("full")
    text = spec.config_path.read_text()
    state_line = f'dir = "{spec.state_dir}"\n'
    assert state_line in text
    db = small_disk / "state.db"
    spec.config_path.write_text(text.replace(state_line, f'{state_line}db_file = "{db}"\n'))
    cfg = load_config(env=spec.env()).config
    assert cfg.state.db_path == db
    runtime.start(cfg)
    run = uuid.uuid4().hex[:8]
    accepted: list[str] = []
    try:
        addr = dial_addr(cfg.gateway.orchestrator_grpc_addr)
        http_addr = dial_addr(cfg.gateway.orchestrator_http_addr)
        with (
            grpc.insecure_channel(addr) as ch,
            AgentInfraSync(orchestrator_addr=addr, config=cfg).start() as infra,
        ):
            stub = opb_grpc.OrchestratorServiceStub(ch)
            sleepers = [
                infra.submit_task(f"slow-{run}-{i}", {"type": "sleep", "seconds": 3.0})["task_id"]
                for i in range(4)
            ]
            accepted += sleepers
            filler = fill(small_disk)
            refused = None
            for k in range(400):  # the WAL has some room left: keep writing until it is gone
                tasks = batch(f"b-{run}-{k}", 100)
                try:
                    stub.SubmitTasks(opb.SubmitTasksRequest(tasks=tasks))
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
                    assert str(small_disk) in e.details(), e.details()
                    refused = [t.id for t in tasks]
                    break
                accepted += [t.id for t in tasks]
            assert refused is not None, "the store never reported a full disk"
            for k in range(200):  # and until not even one more task fits
                try:
                    stub.SubmitTask(batch(f"one-{run}-{k}", 1)[0])
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
                    break
                accepted.append(f"one-{run}-{k}-0")
            else:
                raise AssertionError("single submits kept fitting on a full disk")
            # full: every entry point says so and writes nothing
            r = httpx.post(
                f"http://{http_addr}/queue/submit",
                json={"id": f"h-{run}", "payload": {"type": "noop"}},
            )
            assert r.status_code == 507 and str(small_disk) in r.json()["error"], r.text
            with pytest.raises(StorageFullError) as full:
                infra.submit_task(f"c-{run}", {"type": "noop"})
            assert full.value.path == str(small_disk)
            health = stub.Health(opb.HealthRequest(), timeout=10)
            assert health.healthy, health
            # the sleepers end meanwhile: the scheduler cannot write that, and waits for space
            assert wait_for_log(spec.root / "ray", "task state changes wait", 30), (
                "the scheduler never met the full disk"
            )
            # space returns: what was acknowledged completes, new work is accepted
            filler.unlink()
            done = infra.wait_tasks(accepted, timeout=120)
            assert {d["status"] for d in done} == {"completed"}, {d["status"] for d in done}
            assert infra.submit_task(f"after-{run}", {"type": "noop"})["success"]
            assert infra.wait_task(f"after-{run}", timeout=60)["status"] == "completed"
            for tid in (refused[0], refused[-1], f"h-{run}", f"c-{run}"):  # nothing half-written
                with pytest.raises(grpc.RpcError) as e:
                    stub.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid))
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        runtime.stop(cfg.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)

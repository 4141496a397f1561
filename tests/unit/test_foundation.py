"""Pure pieces of the foundation: public API, head argv/env, ports, connection file, actor base."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import rayinfra
from rayinfra import hardware, head
from rayinfra.actors import control_actor_classes
from rayinfra.actors.base import ControlActor
from rayinfra.config import config_to_dict, load_config
from rayinfra.connection import (
    ConnectionInfo,
    pid_alive,
    read_connection,
    remove_connection,
    write_connection,
)


def test_public_api_is_pinned() -> None:
    assert sorted(rayinfra.__all__) == [
        "ActorTransport",
        "AgentInfra",
        "AgentInfraSync",
        "ConfigError",
        "ConnectionInfo",
        "GrpcTransport",
        "HardwareInfo",
        "InvalidArgumentError",
        "RayinfraConfig",
        "TaskNotFoundError",
        "__version__",
        "connect",
        "detect_hardware",
        "load_config",
    ]
    for name in rayinfra.__all__:
        assert hasattr(rayinfra, name), name


@pytest.mark.parametrize(
    ("old", "new"),
    [("TaskNotFound", "TaskNotFoundError"), ("InvalidArgument", "InvalidArgumentError")],
)
def test_old_public_names_still_work_with_a_deprecation_warning(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"rayinfra.{new}"):
        value = getattr(rayinfra, old)
    assert value is getattr(rayinfra, new)


def _cfg(tmp_path: Path, **env: str):
    return load_config(env={"HOME": str(tmp_path), **env}, cwd=tmp_path).config


NO_GPU = hardware.HardwareInfo(
    hostname="h", cpu_count=8, memory_bytes=16 << 30, gpus=(), gpu_source="none", probe_notes=()
)


def test_head_argv_is_loopback_with_explicit_ports(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    argv = head.head_argv(cfg, NO_GPU, "/venv/bin/ray")
    assert argv[:4] == ["/venv/bin/ray", "start", "--head", "--block"]
    assert "--node-ip-address=127.0.0.1" in argv
    assert "--port=6385" in argv and "--dashboard-host=127.0.0.1" in argv
    for flag in (
        "--node-manager-port=6386",
        "--object-manager-port=6387",
        "--ray-client-server-port=10001",
        "--dashboard-agent-grpc-port=6388",
        "--metrics-export-port=6389",
        "--runtime-env-agent-port=6390",
        "--min-worker-port=11000",
        "--max-worker-port=11999",
        "--disable-usage-stats",
        "--num-cpus=8",
        "--num-gpus=0",
    ):
        assert flag in argv, flag
    labels = next(a for a in argv if a.startswith("--labels="))
    assert "rayinfra.io/role=head" in labels and "rayinfra.io/accelerator-type=none" in labels
    assert not any(a == "stop" for a in argv)


def test_head_env_forces_loopback_and_auth(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    env = head.head_env(
        cfg, {"RAY_ADDRESS": "10.0.0.1:6379", "RAY_AUTH_TOKEN": "x", "PATH": "/bin"}
    )
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(cfg.ray_token_path)
    assert "RAY_ADDRESS" not in env and "RAY_AUTH_TOKEN" not in env
    assert env["PATH"] == "/bin"
    off = _cfg(tmp_path, RAYINFRA_CONFIG=str(_write(tmp_path, "[ray]\nauth_mode='disabled'\n")))
    env = head.head_env(off, {"RAY_AUTH_TOKEN_PATH": "/x"})
    assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in env


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_busy_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = _cfg(
            tmp_path,
            RAYINFRA_CONFIG=str(_write(tmp_path, f"[ray]\nmetrics_export_port = {port}\n")),
        )
        with pytest.raises(head.PortBusy, match=f"port {port} \\(metrics_export_port\\)"):
            head.check_ports(cfg)
    head.check_ports(cfg)  # freed: no error


def test_token_file_is_private(tmp_path: Path) -> None:
    path = head.ensure_token(tmp_path / "sub" / "tok")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    first = path.read_text()
    assert len(first) == 64
    head.ensure_token(path)
    assert path.read_text() == first  # never rotated under a running head


def test_connection_file_round_trip_and_staleness(tmp_path: Path) -> None:
    info = ConnectionInfo(
        gcs_address="127.0.0.1:6385",
        mode="local",
        loopback=True,
        auth_mode="token",
        token_path="/t",
        state_dir=str(tmp_path),
        head_pid=os.getpid(),
        ports={"gcs_port": 6385},
    )
    write_connection(info)
    assert read_connection(tmp_path) == info
    assert info.to_dict()["launched_by_rayinfra"] is True
    (tmp_path / "connection.json").write_text("{not json")
    assert read_connection(tmp_path) is None
    remove_connection(tmp_path)
    assert read_connection(tmp_path) is None
    assert pid_alive(os.getpid()) and not pid_alive(None) and not pid_alive(2**22 + 7)


def test_control_actor_logic_without_ray(tmp_path: Path) -> None:
    """The actor shell is plain Python: restarts, lifecycle feed and events over a real store."""
    cfg = config_to_dict(_cfg(tmp_path, RAYINFRA_STATE_DIR=str(tmp_path / "s")))
    cls = control_actor_classes()["service_registry"]

    async def scenario() -> None:
        a = cls(cfg)
        pong = await a.ping()
        assert pong["name"] == "service_registry" and pong["restarts"] == 0
        seq, items = await a.changes(0, timeout_s=0)
        assert [i["kind"] for i in items] == ["lifecycle"]
        await a.shutdown()
        b = cls(cfg)  # what Ray does on restart: a new instance over the same store
        assert (await b.ping())["restarts"] == 1
        seq2, items2 = await b.changes(seq, timeout_s=0)
        assert [i["data"]["restarts"] for i in items2] == [1] and seq2 > seq
        waiter = asyncio.create_task(b.changes(seq2, timeout_s=5))
        await asyncio.sleep(0.05)
        await b.feed.publish([("t1", "state", {"status": "running"})])
        seq3, items3 = await asyncio.wait_for(waiter, 2)
        assert [(i["key"], i["data"]) for i in items3] == [("t1", {"status": "running"})]
        _, events = await b.events(0, types=["actor_started"])
        assert [e["data"]["restarts"] for e in events] == [0, 1]
        last_event = b.store.last_event_seq()
        assert await b.events(seq3 + 10**6, timeout_s=0.05) == (last_event, [])
        await b.shutdown()

    asyncio.run(scenario())
    assert issubclass(cls, ControlActor)


def test_executor_scaling_rule() -> None:
    from rayinfra.scheduling.classes import can_fit, executor_target

    # CPU-only classes: a fixed pool; the adaptive limit does the rest
    assert executor_target(None, 1, 256, 1, 10_000, 50, True) == 1
    # slot-bound classes grow one executor at a time while work exceeds capacity and Ray has room
    assert executor_target(1, 1, 8, 1, 5, 1, True) == 2
    assert executor_target(1, 1, 8, 2, 5, 2, False) == 2  # Ray has nothing free
    assert executor_target(1, 1, 8, 8, 5, 8, True) == 8  # max_limit / slots reached
    assert executor_target(1, 1, 8, 2, 0, 2, True) == 2  # no backlog
    assert executor_target(2, 1, 8, 1, 1, 1, True) == 1  # capacity 2 covers 1 running + 1 queued
    assert can_fit({"GPU": 1.0}, {"GPU": 1.0, "CPU": 2.0}) and not can_fit(
        {"GPU": 1.0}, {"CPU": 2.0}
    )


def test_a_port_in_time_wait_is_not_busy() -> None:
    """Right after a head stops its ports sit in TIME_WAIT; `stop && start` must still work.
    (Ray's servers set SO_REUSEADDR, so their TIME_WAIT sockets carry it, as this listener's do.)"""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
    client.close()
    listener.close()
    time.sleep(0.2)  # let the FIN exchange finish: FIN_WAIT_2 -> TIME_WAIT
    probe = socket.socket()
    with pytest.raises(OSError):  # a plain bind still trips over the TIME_WAIT connection
        probe.bind(("127.0.0.1", port))
    probe.close()
    assert head.port_in_use(port) is False


def test_importing_ahead_of_the_head_leaves_a_failure_to_the_import_proper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`runtime.start` imports Ray and the actor classes on a thread while the head starts: a
    failure there is logged, not raised on that thread (the connect that follows imports again,
    and raises it where start handles it)."""
    from rayinfra import runtime

    def broken() -> None:
        raise ImportError("no ray here")

    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    monkeypatch.setattr(runtime.raywrap, "import_ray", broken)
    thread = runtime._import_ahead()
    thread.join(30)
    assert not thread.is_alive() and raised == []

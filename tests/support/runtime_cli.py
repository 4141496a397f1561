"""A test's own runtime driven from outside, as a user drives it: the ``rayinfra`` CLI in a
subprocess (so the test process never becomes a driver of that runtime's Ray cluster), a runtime
with ``[gateway]`` settings of its own started and stopped that way (:func:`cli_runtime`), and a
whole-runtime crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from rayinfra.api import stubs
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from rayinfra.connection import pid_alive
from rayinfra.head import session_members
from tests.conftest import RuntimeSpec, make_runtime_spec

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
REPO = Path(__file__).resolve().parents[2]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``rayinfra ARGS`` in a subprocess with ``env``, from the repository's root."""
    return subprocess.run(
        [*RAYINFRA, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def cli(
    spec: RuntimeSpec, *args: str, timeout: float = 180, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``rayinfra ARGS`` with the spec's config; with ``check``, fail the test on a non-zero
    exit, showing its output."""
    done = run_cli(spec.env(), *args, timeout=timeout)
    if check:
        assert done.returncode == 0, f"rayinfra {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def kill_runtime(spec: RuntimeSpec) -> None:
    """SIGKILL every process of the head's session: Ray, the control actors, the executors."""
    conn = json.loads((spec.state_dir / "connection.json").read_text())
    members = session_members(conn["head_pid"])
    assert members, "the head's session is empty"
    for pid in members:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in members):
        assert time.monotonic() < deadline, "the runtime's processes did not die"
        time.sleep(0.1)


@dataclass
class CliRuntime:
    spec: RuntimeSpec
    config: RayinfraConfig
    env: dict[str, str]
    start_output: str  # what `rayinfra start --daemon` printed

    def addr(self, key: str) -> str:
        return dial_addr(getattr(self.config.gateway, key))

    def token(self) -> str:
        """The local token file's token."""
        return self.config.gateway_token_path.read_text().strip()


def local_bearer(config: RayinfraConfig) -> tuple[tuple[str, str], ...]:
    """The metadata a local client sends a gateway that requires a token (the configured one,
    else the local token file's); none when it requires none."""
    if not config.gateway.auth_required():
        return ()
    token = config.gateway.auth_token or config.gateway_token_path.read_text().strip()
    return (("authorization", f"Bearer {token}"),)


@contextmanager
def cli_runtime(
    prefix: str,
    gateway_lines: str | Callable[[Path], str],
    extra_toml: str = "",
    credentials: Callable[[], grpc.ChannelCredentials] | None = None,
) -> Iterator[CliRuntime]:
    """Start a runtime whose ``[gateway]`` table also has ``gateway_lines`` (or what it returns
    given the runtime's root directory, where it may write files: a TLS cert); yield it once its
    orchestrator gRPC server answers Health (over a channel with ``credentials`` when given:
    TLS; with the local token when the gateway requires one); stop it (only what it started, by
    its recorded pid) and remove its files."""
    spec = make_runtime_spec(prefix, extra_toml)
    lines = gateway_lines(spec.root) if callable(gateway_lines) else gateway_lines
    text = spec.config_path.read_text()
    assert text.count("[gateway]\n") == 1  # make_runtime_spec's table: the keys go into it
    spec.config_path.write_text(text.replace("[gateway]\n", f"[gateway]\n{lines}\n"))
    env = spec.env()
    env.pop("RAY_ADDRESS", None)  # never join the session runtime's cluster
    started = run_cli(env, "start", "--daemon")
    stopped = None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        config = load_config(env=env).config
        opb, opb_grpc = stubs.orchestrator()
        addr = dial_addr(config.gateway.orchestrator_grpc_addr)
        deadline = time.monotonic() + 60  # the gateway binds its servers in the background
        channel = (
            grpc.secure_channel(addr, credentials())
            if credentials is not None
            else grpc.insecure_channel(addr)
        )
        with channel as ch:
            while True:
                try:
                    opb_grpc.OrchestratorServiceStub(ch).Health(
                        opb.HealthRequest(), metadata=local_bearer(config), timeout=5
                    )
                    break
                except (grpc.RpcError, FileNotFoundError):  # the token file comes with the gateway
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        yield CliRuntime(spec, config, env, started.stdout)
    finally:
        stopped = run_cli(env, "stop")
        if stopped.returncode != 0:
            run_cli(env, "stop", "--force")
        shutil.rmtree(spec.root, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr

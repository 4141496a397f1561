"""Helpers of the Slurm tests: golden files, the real single-node Slurm (and its controller,
stopped and started again by the fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayinfra.slurm.cli import SlurmCli
from rayinfra.slurm.errors import SlurmUnavailableError
from tests.support.polling import wait_until

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "slurm"


def assert_golden(name: str, text: str) -> None:
    """``text`` equals ``tests/golden/slurm/<name>``; ``UPDATE_GOLDEN=1`` rewrites the file."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with UPDATE_GOLDEN=1")
    expected = path.read_text()
    assert text == expected, f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)"


def golden_text(name: str) -> str:
    """An input file kept beside the golden files (a template of the original bridge)."""
    return (GOLDEN / name).read_text()


def require_slurm(cli: SlurmCli | None = None) -> SlurmCli:
    """The real Slurm of this machine, or a failure that says how to start it (never a skip:
    CI installs Slurm, TESTING.md)."""
    cli = cli or SlurmCli(timeout_s=20)
    try:
        cli.ping()
    except SlurmUnavailableError as e:
        pytest.fail(f"Slurm is not running here ({e}); start it: source .ci/setup.d/40-slurm.sh")
    return cli


def slurm_conf() -> dict[str, str]:
    """The controller's ``slurm.conf`` (``SLURM_CONF``, else /etc/slurm/slurm.conf) as
    ``{key: value}`` (first occurrence; comments and node/partition lines' extra keys ignored)."""
    path = Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")
    conf: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.split("#", 1)[0].strip().partition("=")
        if sep:
            conf.setdefault(key.strip(), value.strip().split()[0] if value.strip() else "")
    return conf


@dataclass
class SlurmController:
    """The machine's ``slurmctld``, found by the ``SlurmctldPidFile`` of its ``slurm.conf``:
    stopped by that pid (SIGTERM) and started again with the argv it was started with (read
    from ``/proc/<pid>/cmdline`` while it ran)."""

    pidfile: Path
    argv: list[str]

    @classmethod
    def running(cls) -> SlurmController:
        require_slurm()
        pidfile = Path(slurm_conf()["SlurmctldPidFile"])
        pid = _live_pid(pidfile, "slurmctld")
        assert pid is not None, f"no live slurmctld named in {pidfile}"
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        return cls(pidfile, argv)

    def up(self) -> bool:
        try:
            SlurmCli(timeout_s=10).ping()
        except SlurmUnavailableError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM to its pid; returns once the process is gone."""
        pid = _live_pid(self.pidfile, "slurmctld")
        assert pid is not None, f"no live slurmctld named in {self.pidfile}"
        os.kill(pid, signal.SIGTERM)
        wait_until("slurmctld to exit", lambda: not Path(f"/proc/{pid}").exists(), 30, 0.05)

    def start(self) -> None:
        """Run its argv again (slurmctld daemonizes itself); returns once it answers a ping."""
        subprocess.run(self.argv, check=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL)
        wait_until("slurmctld to answer `scontrol ping`", self.up, 60, 0.1)

    def ensure_up(self) -> None:
        """Whatever a test did: slurmctld runs and answers afterwards."""
        if self.up():
            return
        if _live_pid(self.pidfile, "slurmctld") is None:
            self.start()
        else:  # starting (or stopping): let it get there
            wait_until("slurmctld to answer `scontrol ping`", self.up, 60, 0.2)


def _live_pid(pidfile: Path, comm: str) -> int | None:
    """The pid in ``pidfile`` if it names a live process called ``comm``."""
    try:
        pid = int(pidfile.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
            return pid
    except (OSError, ValueError):
        pass
    return None

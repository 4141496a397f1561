"""An ssh server standing in for a remote machine, for `ray up` tests.

``sshd`` listens on a loopback address of its own and runs as pid 1 of a fresh PID and mount
namespace (``unshare --pid --fork --mount-proc``): everything its sessions start lives in that
namespace, so a ``ray stop`` run over ssh (``ray down`` runs one) sees only those processes, and
killing sshd ends them all. Its sessions see a private ``/root`` (``~``) and ``/tmp``, bind-mounted
from directories the test owns, as a separate machine would have its own. Needs root and
``openssh-server`` (.ci/setup.d/50-sshd.sh).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 15.0

SSHD_CONFIG = """\
ListenAddress {host}:{port}
HostKey /root/.sshd/host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes no
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 64
LogLevel VERBOSE
"""

# pid 1 of the namespace: mount the private home (with what it keeps of the real one) and /tmp,
# then become sshd (in the foreground: if pid 1 exits, the kernel kills the whole namespace)
INIT = """\
set -e
{keep}
mount --rbind {home} /root
mount --bind {tmp} /tmp
exec {sshd} -D -e -f /root/.sshd/sshd_config
"""


@dataclass(frozen=True)
class Sshd:
    host: str
    port: int
    key: Path  # the client's private key (root may log in with it)
    home: Path  # what sessions see as /root
    tmp: Path  # what sessions see as /tmp
    log: Path  # sshd's own log
    unshare_pid: int
    init_pid: int  # sshd, pid 1 of the namespace

    @property
    def proxy_command(self) -> str:
        """An ssh ProxyCommand reaching this server at the address ssh was asked for (Ray's
        yaml has no ssh port setting)."""
        return f"nc %h {self.port}"

    def ssh_argv(self, command: str) -> list[str]:
        """``ssh`` running ``command`` as root in a login shell that sources ``~/.bashrc`` (as
        Ray's cluster launcher runs its commands)."""
        return [
            "ssh",
            "-i",
            str(self.key),
            "-o",
            f"ProxyCommand={self.proxy_command}",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"root@{self.host}",
            "bash --login -c " + shlex.quote(f"source ~/.bashrc; {command}"),
        ]

    def run(self, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.ssh_argv(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def processes(self) -> dict[int, str]:
        """``pid -> command line`` of every live process in the namespace but sshd itself."""
        try:
            ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        except OSError:
            return {}
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.init_pid:
                continue
            try:
                if os.readlink(entry / "ns" / "pid") != ns:
                    continue
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue  # exited meanwhile
            found[int(entry.name)] = cmdline.strip()
        return found

    def non_sshd_processes(self) -> dict[int, str]:
        """What is left in the namespace besides sshd and its per-connection processes."""
        return {p: c for p, c in self.processes().items() if not c.startswith("sshd:")}


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rayinfra-test", "-f", str(path)],
        check=True,
        timeout=30,
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@contextlib.contextmanager
def namespaced_sshd(
    root: Path,
    host: str,
    port: int,
    *,
    bashrc: str = "",
    keep: Sequence[str] = (),
    key: Path | None = None,
    peers: Mapping[str, int] | None = None,
) -> Iterator[Sshd]:
    """Run sshd on ``host:port`` in its own PID and mount namespace until the block ends.

    ``root`` gets ``home/`` (the sessions' ``/root``; ``bashrc`` becomes its ``.bashrc``; the
    entries of the real ``/root`` named in ``keep`` stay visible in it, such as ``.pyenv`` when
    an interpreter lives there), ``tmp/`` (their ``/tmp``) and ``sshd.log``. Root logs in with
    ``key`` (default: a new ``root/client_key``). ``peers`` (address -> port) are the other
    namespaced sshds the sessions' ssh reaches by address alone (``~/.ssh/config``), as one
    machine reaches another on port 22. On exit sshd is killed, which ends every process in
    the namespace.
    """
    home, tmp = root / "home", root / "tmp"
    for d in (home / ".ssh", home / ".sshd", tmp):
        d.mkdir(parents=True, mode=0o700)
    tmp.chmod(0o1777)
    _keygen(home / ".sshd" / "host_ed25519_key")
    if key is None:
        key = root / "client_key"
        _keygen(key)
    authorized = home / ".ssh" / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    config = "".join(f"Host {addr}\n    Port {p}\n" for addr, p in (peers or {}).items())
    (home / ".ssh" / "config").write_text(config)
    (home / ".sshd" / "sshd_config").write_text(SSHD_CONFIG.format(host=host, port=port))
    (home / ".bashrc").write_text(bashrc)
    log = root / "sshd.log"
    binds = []
    for name in keep:
        real, mirror = shlex.quote(f"/root/{name}"), shlex.quote(str(home / name))
        binds.append(f"mkdir -p {mirror}\nmount --bind {real} {mirror}")
    init = INIT.format(
        keep="\n".join(binds), home=shlex.quote(str(home)), tmp=shlex.quote(str(tmp)), sshd=SSHD
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", init],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    init_pid = 0
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (init_pid and _listening(host, port)):
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({proc.returncode}): {log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd not listening on {host}:{port}: {log.read_text()}")
            init_pid = next(iter(_children(proc.pid)), 0)
            time.sleep(0.05)
        yield Sshd(host, port, key, home, tmp, log, proc.pid, init_pid)
    finally:
        # SIGKILL to pid 1 of a PID namespace kills every process in it
        if init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init_pid, signal.SIGKILL)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()  # unshare itself (--kill-child takes its child along)
            proc.wait(timeout=15)

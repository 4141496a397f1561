# shellcheck shell=bash
# Sourced. What the `ray up cluster.yaml` test (tests/e2e/test_ray_up.py) needs: an ssh server
# (the test runs its own sshd on a loopback address in a private PID namespace), rsync (file_mounts)
# and netcat-openbsd (`nc`, the test's ssh_proxy_command: Ray's yaml has no ssh port key).
# Idempotent: skips apt entirely when all three are installed. Never starts a system sshd:
# policy-rc.d forbids package scripts to start daemons, as in 10-apt.sh.
# shellcheck source=.ci/apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh"
ri_apt_install openssh-server rsync netcat-openbsd
# sshd refuses to start without its privilege-separation directory (normally made by systemd)
mkdir -p /run/sshd

# shellcheck shell=bash
# Sourced. What the `ray up cluster.yaml` test (tests/e2e/test_ray_up.py) needs: an ssh server
# (the test runs its own sshd on a loopback address in a private PID namespace), rsync (file_mounts)
# and netcat-openbsd (`nc`, the test's ssh_proxy_command: Ray's yaml has no ssh port key).
# Idempotent: skips apt entirely when all three are installed. Never starts a system sshd:
# policy-rc.d forbids package scripts to start daemons, as in 10-apt.sh.
_ri_pkgs=(openssh-server rsync netcat-openbsd)
_ri_missing=()
for _ri_p in "${_ri_pkgs[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$_ri_p" 2>/dev/null)" != "install ok installed" ]; then
    _ri_missing+=("$_ri_p")
  fi
done
if [ "${#_ri_missing[@]}" -gt 0 ]; then
  echo "installing: ${_ri_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  _ri_policy=/usr/sbin/policy-rc.d
  _ri_had_policy=0
  [ -e "$_ri_policy" ] && _ri_had_policy=1
  if [ "$_ri_had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > "$_ri_policy" && chmod +x "$_ri_policy"
  fi
  apt-get install -y -qq --no-install-recommends "${_ri_missing[@]}" >/dev/null
  if [ "$_ri_had_policy" = 0 ]; then rm -f "$_ri_policy"; fi
  unset _ri_policy _ri_had_policy
fi
# sshd refuses to start without its privilege-separation directory (normally made by systemd)
mkdir -p /run/sshd
unset _ri_pkgs _ri_missing _ri_p

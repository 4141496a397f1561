# shellcheck shell=bash
# Sourced by .ci/setup.d/*.sh: `ri_apt_install PKG...` installs the Debian packages that are not
# installed yet (`apt-get update` only then), with a policy-rc.d that forbids package scripts to
# start system daemons (dockerd, redis, munged, slurmctld, sshd...): the setup scripts start
# private ones on their own sockets and ports.
ri_apt_install() {
  local p missing=() policy=/usr/sbin/policy-rc.d had_policy=0
  for p in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
      missing+=("$p")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ -e "$policy" ] && had_policy=1
  if [ "$had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  local rc=$?
  if [ "$had_policy" = 0 ]; then rm -f "$policy"; fi
  return "$rc"
}

# Sourced. Debian packages the integration tests use for real: a private Docker engine
# (docker.io), busybox-static (stand-in images), redis-server, docker-registry (a loopback
# registry for real pulls), prometheus (its Go binary goes into a stand-in image), and zookeeper
# with openjdk-17-jdk-headless (Debian's ZooKeeper jars on a jlink'd Java runtime make the
# cp-zookeeper stand-in: ~10 s of apt and ~10 s to build the image once; see
# tests/support/images.py). Skips apt entirely when everything is installed; `apt-get update`
# only when something is missing.
_ri_pkgs=(docker.io busybox-static redis-server docker-registry prometheus zookeeper
  openjdk-17-jdk-headless)
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
  # policy-rc.d: never let package scripts start system daemons (dockerd, redis, registry,
  # prometheus): the setup scripts start private ones on their own sockets and ports.
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
unset _ri_pkgs _ri_missing _ri_p

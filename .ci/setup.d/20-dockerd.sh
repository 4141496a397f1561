# shellcheck shell=bash
# Sourced. A private Docker engine for the tests (TESTING.md): its own data root and socket, no
# default bridge (containers can never get a 172.17.x address), no iptables/NAT/forwarding.
# Tests run containers with network_mode "host" or "none" and bind 127.0.0.1. Idempotent: skips
# when the engine on the socket already answers. Only for a machine where this is the only daemon
# (--bridge=none deletes an existing docker0).
_ri_droot=/var/lib/ci-docker
_ri_dsock=/run/ci-docker.sock
export DOCKER_HOST="unix://$_ri_dsock"
if ! docker -H "$DOCKER_HOST" version >/dev/null 2>&1; then
  mkdir -p "$_ri_droot/data" "$_ri_droot/exec"
  _ri_dpid="$(cat "$_ri_droot/dockerd.pid" 2>/dev/null || true)"
  if [ -n "$_ri_dpid" ] && [ "$(cat "/proc/$_ri_dpid/comm" 2>/dev/null)" = dockerd ]; then
    echo "dockerd (pid $_ri_dpid) runs but does not answer yet; waiting for it"
  else
    # a pid file left by a daemon that died makes dockerd refuse to start
    rm -f "$_ri_droot/dockerd.pid"
    # in a subshell that exits at once: dockerd is handed to init, not left a child of the shell
    # that .ci/run execs into the tests (which would never reap it when a test stops it)
    (nohup dockerd --data-root "$_ri_droot/data" --exec-root "$_ri_droot/exec" -H "$DOCKER_HOST" \
      --pidfile "$_ri_droot/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
      --ip-masq=false --ip-forward=false >>"$_ri_droot/dockerd.log" 2>&1 </dev/null &)
  fi
  unset _ri_dpid
  _ri_deadline=$((SECONDS + 30))
  until docker -H "$DOCKER_HOST" version >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$_ri_deadline" ]; then
      echo "ERROR: dockerd did not answer on $_ri_dsock within 30 s; last lines of $_ri_droot/dockerd.log:" >&2
      tail -n 30 "$_ri_droot/dockerd.log" >&2 || true
      return 1 2>/dev/null || exit 1
    fi
    sleep 0.2
  done
  unset _ri_deadline
  echo "dockerd up on $_ri_dsock (pid $(cat "$_ri_droot/dockerd.pid" 2>/dev/null))"
fi
unset _ri_droot _ri_dsock

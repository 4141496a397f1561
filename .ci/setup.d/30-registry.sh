# shellcheck shell=bash
# Sourced. A container registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1:5000
# with its own config and storage, for real pulls with byte progress. dockerd treats 127.0.0.0/8
# registries as insecure by default, so plain HTTP works. Idempotent: skips when /v2/ answers.
_ri_rroot=/var/lib/ci-registry
_ri_raddr=127.0.0.1:5000
_ri_rup() {
  python3 - "$_ri_raddr" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=1) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
if ! _ri_rup; then
  mkdir -p "$_ri_rroot/storage"
  cat > "$_ri_rroot/config.yml" <<YML
version: 0.1
log:
  level: warn
  fields:
    service: ci-registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $_ri_rroot/storage
  delete:
    enabled: true
http:
  addr: $_ri_raddr
  headers:
    X-Content-Type-Options: [nosniff]
YML
  _ri_rpid="$(cat "$_ri_rroot/registry.pid" 2>/dev/null || true)"
  if [ -n "$_ri_rpid" ] && [ "$(cat "/proc/$_ri_rpid/comm" 2>/dev/null)" = docker-registry ]; then
    echo "docker-registry (pid $_ri_rpid) runs but does not answer yet; waiting for it"
  else
    nohup docker-registry serve "$_ri_rroot/config.yml" >>"$_ri_rroot/registry.log" 2>&1 </dev/null &
    echo $! > "$_ri_rroot/registry.pid"
  fi
  unset _ri_rpid
  _ri_deadline=$((SECONDS + 20))
  until _ri_rup; do
    if [ "$SECONDS" -ge "$_ri_deadline" ] || ! kill -0 "$(cat "$_ri_rroot/registry.pid")" 2>/dev/null; then
      echo "ERROR: docker-registry did not answer on http://$_ri_raddr/v2/; last lines of $_ri_rroot/registry.log:" >&2
      tail -n 30 "$_ri_rroot/registry.log" >&2 || true
      return 1 2>/dev/null || exit 1
    fi
    sleep 0.2
  done
  unset _ri_deadline
  echo "registry up on $_ri_raddr (pid $(cat "$_ri_rroot/registry.pid"))"
fi
export RAYINFRA_TEST_REGISTRY="$_ri_raddr"
unset -f _ri_rup
unset _ri_rroot _ri_raddr

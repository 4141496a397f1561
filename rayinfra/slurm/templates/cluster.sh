# ---- the cluster (static part of rayinfra/slurm/templates/cluster.sh) ----
# The batch shell runs on the allocation's first node, the head: it makes the job dir (0700, on
# the shared path) and the job's Ray auth token, picks the node IP and free ports, starts
# `ray start --head --block` there as a job step, waits until the head serves, writes the
# connection file (atomically) in the job dir, starts the workers (RI_WORKERS_PER_NODE Ray nodes
# per other node, that many minus one beside the head; each waits for that file, then runs the
# join command), runs the driver command (rayinfra, its gateway on ports picked free) and waits
# on the head. SIGTERM (scancel, or --signal before the time limit) stops the steps, removes the
# connection file, the token and the head's temp dir; each worker removes its own temp dir.
set -euo pipefail
# cluster mode: never the loopback setting (Ray would refuse workers), never another cluster's
# address or token from the submitting shell (sbatch exports its environment)
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS RAY_AUTH_TOKEN RAYINFRA_GATEWAY RAYINFRA_ADDRESS \
  RAYINFRA_AUTH_TOKEN

ri_log() { echo "rayinfra[$(date +%H:%M:%S)] $*" >&2; }

ri_node_ip() {  # this node's IP: forced, the interface's, `hostname -I`, or the hostname's
  local ip=""
  if [ -n "$RI_NODE_IP_FORCED" ]; then
    ip=$RI_NODE_IP_FORCED
  elif [ -n "$RI_INTERFACE" ]; then
    ip=$("$RI_PYTHON" -c 'import fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack("256s", sys.argv[1][:15].encode())
print(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]))' "$RI_INTERFACE") || ip=""
  else
    ip=$(hostname -I 2>/dev/null | awk '{print $1}') || ip=""
    if [ -z "$ip" ]; then
      ip=$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 {print $1}') || ip=""
    fi
  fi
  if [ -z "$ip" ]; then
    ri_log "cannot determine the IP of $(hostname) (interface '${RI_INTERFACE}')"
    return 1
  fi
  echo "$ip"
}

ri_pick_ports() {  # IP PORT...: each 0 becomes a port free on IP now (all distinct)
  "$RI_PYTHON" -c 'import socket, sys
want = [int(p) for p in sys.argv[2:]]
taken, held, out = set(want), [], []
for port in want:
    while not port:
        s = socket.socket()
        s.bind((sys.argv[1], 0))
        held.append(s)
        if s.getsockname()[1] not in taken:
            port = s.getsockname()[1]
            taken.add(port)
    out.append(str(port))
print(" ".join(out))' "$@"
}

ri_set_ports() {  # NAMES VALUES: RI_<NAME> for each name (node-manager-port -> RI_NODE_MANAGER_PORT)
  local names values i var
  read -r -a names <<<"$1"
  read -r -a values <<<"$2"
  for i in "${!names[@]}"; do
    var=${names[$i]^^}
    var=RI_${var//-/_}
    printf -v "$var" '%s' "${values[$i]}"
    export "${var?}"
  done
}

ri_port_args() {  # NAMES: --<flag>=$RI_<NAME> for each name (gcs-port is ray's --port)
  local names name var
  read -r -a names <<<"$1"
  for name in "${names[@]}"; do
    var=${name^^}
    var=RI_${var//-/_}
    if [ "$name" = gcs-port ]; then name=port; fi
    printf '%s\n' "--$name=${!var}"
  done
}

ri_reap() {  # DIR...: SIGKILL this user's processes still using a Ray temp dir of this job (a
  # Ray worker whose raylet died first is re-parented and escapes the step's process tracking)
  "$RI_PYTHON" - "$@" <<'PY' || true
import os, signal, sys
dirs = [d.rstrip("/") for d in sys.argv[1:]]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid() or int(pid) == os.getpid():
            continue
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        continue
    if any(a == f"--temp-dir={d}" or a.startswith(f"{d}/") or f"={d}/" in a
           for a in args for d in dirs):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
PY
}

ri_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ri_hardware_args() {  # ROLE: --num-cpus, --num-gpus, --labels, --resources, one per line, built
  # by rayinfra.hardware as for rayinfra's own nodes (detected accelerator labels); a Python
  # without rayinfra gets the same flags without the detected GPU labels
  "$RI_PYTHON" - "$1" <<'PY' || ri_log "cannot build the ray start arguments with $RI_PYTHON"
import os, sys
e = os.environ
role, cpus, gpus = sys.argv[1], int(e["RI_NUM_CPUS"]), int(e["RI_NUM_GPUS"])
extra = dict(kv.split("=", 1) for kv in e["RI_NODE_LABELS"].split(","))
try:
    from rayinfra import hardware
except ImportError:
    labels = {e["RI_ROLE_LABEL"]: role, e["RI_GPU_COUNT_LABEL"]: str(gpus), **extra}
    joined = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    args = [f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--labels={joined}"]
else:
    hw = hardware.detect()
    args = hardware.ray_start_args(hw, role=role, num_cpus=cpus, num_gpus=gpus, extra_labels=extra)
print("\n".join(args))
PY
}

ri_share() {  # TOTAL: this Ray node's share of TOTAL (CPUs, GPUs) when RI_WORKERS_PER_NODE share a node
  local share=$(($1 / RI_WORKERS_PER_NODE))
  if [ "$share" -lt 1 ] && [ "$1" -gt 0 ]; then share=1; fi
  echo "$share"
}

ri_worker_main() {  # one per worker Ray node (a job step task): wait for the head, join it, and
  # remove the node's temp dir once Ray exits
  set -euo pipefail
  local deadline=$((SECONDS + RI_WORKER_TIMEOUT_S)) names zeros=() child rc
  until [ -s "$RI_CONNECTION_FILE" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      ri_log "worker $(hostname): no connection file $RI_CONNECTION_FILE after ${RI_WORKER_TIMEOUT_S} s"
      exit 1
    fi
    sleep 0.5
  done
  RI_GCS_ADDRESS=$("$RI_PYTHON" -c 'import json, sys
print(json.load(open(sys.argv[1]))["gcs_address"])' "$RI_CONNECTION_FILE")
  RI_HEAD_IP=${RI_GCS_ADDRESS%:*}
  RI_GCS_PORT=${RI_GCS_ADDRESS##*:}
  RI_NODE_IP=$(ri_node_ip)
  RI_TEMP_DIR="$RI_TEMP_ROOT/ri-$RI_JOB_ID-w${SLURM_STEP_ID:-0}.${SLURM_PROCID:-0}"
  RI_NUM_CPUS=$(ri_share "${SLURM_CPUS_ON_NODE:-1}")
  RI_NUM_GPUS=$(ri_share "$RI_NUM_GPUS")
  RI_NODE_LABELS="${RI_EXTRA_LABELS:+$RI_EXTRA_LABELS,}$RI_JOB_LABEL=$RI_JOB_ID"
  export RI_GCS_ADDRESS RI_HEAD_IP RI_GCS_PORT RI_NODE_IP RI_TEMP_DIR RI_NUM_CPUS RI_NUM_GPUS \
    RI_NODE_LABELS
  mkdir -p "$RI_TEMP_DIR"
  trap 'ri_reap "$RI_TEMP_DIR"; rm -rf "$RI_TEMP_DIR"' EXIT
  mapfile -t RI_HARDWARE_ARGS < <(ri_hardware_args worker)
  if [ "${#RI_HARDWARE_ARGS[@]}" = 0 ]; then exit 1; fi
  read -r -a names <<<"$RI_WORKER_PORT_NAMES"
  for _ in "${names[@]}"; do zeros+=(0); done
  ri_set_ports "$RI_WORKER_PORT_NAMES" "$(ri_pick_ports "$RI_NODE_IP" "${zeros[@]}")"
  ri_log "worker $(hostname) ($RI_NODE_IP, temp dir $RI_TEMP_DIR) joins $RI_GCS_ADDRESS"
  ri_worker_command &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' TERM INT
  while :; do  # a trapped signal ends `wait` early: wait again until the node has exited
    rc=0
    wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  return "$rc"
}

ri_write_connection() {  # $1: rayinfra's state (starting, running, none); tmp file + rename
  RI_STATUS=$1 "$RI_PYTHON" - "$RI_CONNECTION_FILE" <<'PY'
import json, os, sys, time
e = os.environ
ports = {n: int(e["RI_" + n.upper().replace("-", "_")]) for n in e["RI_HEAD_PORT_NAMES"].split()}
dashboard = ports.get("dashboard-port")
gateway = None
if e["RI_STATUS"] == "running":  # the driver (rayinfra) serves where these say
    gateway = {v: e[v] for v in e["RI_GATEWAY_PORT_VARS"].split()}
    gateway["RAYINFRA_TOKEN_FILE"] = e["RAYINFRA_TOKEN_FILE"]
info = {
    "kind": "rayinfra-slurm-cluster",
    "version": 1,
    "job_id": e["RI_JOB_ID"],
    "nodes": int(e["RI_NODES"]),
    "head_node": e["RI_HEAD_NODE"],
    "head_ip": e["RI_NODE_IP"],
    "gcs_address": e["RI_GCS_ADDRESS"],
    "ports": ports,
    "temp_dir": e["RI_TEMP_DIR"],
    "state_dir": e["RI_STATE_DIR"],
    "dashboard_url": f"http://{e['RI_DASHBOARD_HOST']}:{dashboard}" if dashboard else None,
    "ray_token_file": e.get("RAY_AUTH_TOKEN_PATH") or None,
    "workers_per_node": int(e["RI_WORKERS_PER_NODE"]),
    "gateway": gateway,
    "rayinfra": e["RI_STATUS"],
    "updated_at": int(time.time()),
}
path = sys.argv[1]
tmp = f"{path}.tmp{os.getpid()}"
with open(tmp, "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
    f.write("\n")
os.replace(tmp, path)
PY
}

RI_HEAD_SRUN_PID=""
RI_WORKER_SRUN_PIDS=""
RI_DRIVER_PID=""
ri_cleanup() {  # EXIT: stop the driver and the steps (bounded), remove the connection file and temp dir
  local rc=$? pids=() pid alive deadline driver_deadline
  trap - EXIT TERM INT
  set +e
  for pid in $RI_DRIVER_PID $RI_HEAD_SRUN_PID $RI_WORKER_SRUN_PIDS; do
    if kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    # SIGTERM to the steps' processes through Slurm (Ray drains); a signalled srun would
    # SIGKILL its step at once
    scancel --signal=TERM "$RI_JOB_ID" 2>/dev/null
    if [ -n "$RI_DRIVER_PID" ]; then kill -TERM "$RI_DRIVER_PID" 2>/dev/null; fi
    deadline=$((SECONDS + RI_STOP_TIMEOUT_S))
    driver_deadline=$((SECONDS + 5))
    while :; do
      alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      if [ -n "$RI_DRIVER_PID" ] && [ "$SECONDS" -ge "$driver_deadline" ]; then
        kill -KILL "$RI_DRIVER_PID" 2>/dev/null  # a Ray driver blocked in a connect ignores TERM
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        ri_log "steps still running after ${RI_STOP_TIMEOUT_S} s: killing them"
        kill -KILL "${pids[@]}" 2>/dev/null
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "$RI_CONNECTION_FILE" "${RAY_AUTH_TOKEN_PATH:-}" "${RAYINFRA_TOKEN_FILE:-}"
  rmdir "$RI_JOB_DIR" 2>/dev/null
  # this node's Ray temp dirs of the job (the head's; workers beside it that could not clean
  # up, e.g. a step killed with SIGKILL) and whatever still runs from them
  ri_reap "$RI_TEMP_DIR" "$RI_TEMP_ROOT/ri-$RI_JOB_ID-w"*
  rm -rf "$RI_TEMP_DIR" "$RI_TEMP_ROOT/ri-$RI_JOB_ID-w"*
  ri_log "stopped (exit code $rc)"
  exit "$rc"
}

# ---- main ----
trap ri_cleanup EXIT
trap 'ri_log "SIGTERM: stopping the cluster"; exit 143' TERM
trap 'ri_log "SIGINT: stopping the cluster"; exit 130' INT

RI_JOB_ID=${SLURM_JOB_ID:?not inside a Slurm job}
RI_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RI_JOB_DIR="$RI_SHARED_DIR/$RI_JOB_ID"
RI_CONNECTION_FILE="$RI_JOB_DIR/connection.json"
RI_TEMP_DIR="$RI_TEMP_ROOT/ri-$RI_JOB_ID"
RI_STATE_DIR=${RI_STATE_DIR:-$RI_TEMP_DIR/state}
RI_NUM_CPUS=$(ri_share "${SLURM_CPUS_ON_NODE:-1}")
RI_HEAD_GPUS=$(ri_share "$RI_NUM_GPUS")
export RI_JOB_ID RI_HEAD_NODE RI_JOB_DIR RI_CONNECTION_FILE RI_TEMP_DIR RI_STATE_DIR RI_NUM_CPUS
mkdir -p "$RI_SHARED_DIR" "$RI_TEMP_DIR"
mkdir -p "$RI_JOB_DIR" && chmod 700 "$RI_JOB_DIR"  # the job's tokens live here
if [ "$RI_RAY_AUTH" = token ]; then
  # the job's own Ray token: another user's (or job's) driver cannot attach to this cluster
  RI_RAY_TOKEN_FILE="$RI_JOB_DIR/ray_auth_token"
  (umask 077 && "$RI_PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$RI_RAY_TOKEN_FILE")
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RI_RAY_TOKEN_FILE"
else
  RI_RAY_TOKEN_FILE=""
  export RAY_AUTH_MODE=disabled
  unset RAY_AUTH_TOKEN_PATH
fi
export RI_RAY_TOKEN_FILE
RI_NODE_IP=$(ri_node_ip)
RI_HEAD_IP=$RI_NODE_IP
RI_NODE_LABELS="${RI_EXTRA_LABELS:+$RI_EXTRA_LABELS,}$RI_JOB_LABEL=$RI_JOB_ID"
export RI_NODE_IP RI_HEAD_IP RI_NODE_LABELS
read -r -a RI_PORT_VALUES <<<"$RI_HEAD_PORT_VALUES"
ri_set_ports "$RI_HEAD_PORT_NAMES" "$(ri_pick_ports "$RI_NODE_IP" "${RI_PORT_VALUES[@]}")"
RI_GCS_ADDRESS="$RI_NODE_IP:$RI_GCS_PORT"
export RI_GCS_ADDRESS

mapfile -t RI_HARDWARE_ARGS < <(RI_NUM_GPUS=$RI_HEAD_GPUS ri_hardware_args head)
if [ "${#RI_HARDWARE_ARGS[@]}" = 0 ]; then exit 1; fi
mapfile -t RI_HEAD_ARGS < <(ri_port_args "$RI_HEAD_PORT_NAMES")
RI_HEAD_ARGS+=(
  --min-worker-port="$RI_MIN_WORKER_PORT" --max-worker-port="$RI_MAX_WORKER_PORT"
  --temp-dir="$RI_TEMP_DIR" "${RI_HARDWARE_ARGS[@]}" --include-dashboard="$RI_INCLUDE_DASHBOARD"
)
if [ "$RI_INCLUDE_DASHBOARD" = true ]; then RI_HEAD_ARGS+=(--dashboard-host="$RI_DASHBOARD_HOST"); fi
if [ "$RI_USAGE_STATS" = false ]; then RI_HEAD_ARGS+=(--disable-usage-stats); fi
ri_log "job $RI_JOB_ID: head $RI_HEAD_NODE ($RI_NODE_IP), GCS $RI_GCS_ADDRESS, $RI_NODES node(s), temp dir $RI_TEMP_DIR"
srun --overlap --nodes=1 --ntasks=1 --nodelist="$RI_HEAD_NODE" \
  "$RI_RAY" start --head --block --node-ip-address="$RI_NODE_IP" "${RI_HEAD_ARGS[@]}" &
RI_HEAD_SRUN_PID=$!

RI_DEADLINE=$((SECONDS + RI_HEAD_TIMEOUT_S))
until ri_port_open "$RI_NODE_IP" "$RI_GCS_PORT" && ri_port_open "$RI_NODE_IP" "$RI_NODE_MANAGER_PORT"; do
  if ! kill -0 "$RI_HEAD_SRUN_PID" 2>/dev/null; then
    ri_log "the Ray head exited during start-up (its output is above)"
    exit 1
  fi
  if [ "$SECONDS" -ge "$RI_DEADLINE" ]; then
    ri_log "the Ray head does not serve on $RI_GCS_ADDRESS after ${RI_HEAD_TIMEOUT_S} s"
    exit 1
  fi
  sleep 0.2
done
ri_write_connection starting
ri_log "Ray head up at $RI_GCS_ADDRESS; connection file $RI_CONNECTION_FILE"

RI_WORKER_FUNCTIONS="$(declare -f ri_log ri_node_ip ri_pick_ports ri_set_ports ri_share \
  ri_hardware_args ri_reap ri_worker_command ri_worker_main); ri_worker_main"
if [ "$RI_NODES" -gt 1 ]; then
  srun --overlap --nodes=$((RI_NODES - 1)) --ntasks=$(((RI_NODES - 1) * RI_WORKERS_PER_NODE)) \
    --ntasks-per-node="$RI_WORKERS_PER_NODE" --exclude="$RI_HEAD_NODE" \
    bash -c "$RI_WORKER_FUNCTIONS" &
  RI_WORKER_SRUN_PIDS="$RI_WORKER_SRUN_PIDS $!"
fi
if [ "$RI_WORKERS_PER_NODE" -gt 1 ]; then  # the other Ray nodes of the head's Slurm node
  srun --overlap --nodes=1 --ntasks=$((RI_WORKERS_PER_NODE - 1)) --nodelist="$RI_HEAD_NODE" \
    bash -c "$RI_WORKER_FUNCTIONS" &
  RI_WORKER_SRUN_PIDS="$RI_WORKER_SRUN_PIDS $!"
fi

if declare -F ri_driver_command >/dev/null; then
  # rayinfra's gateway: on the head's IP (or RI_GATEWAY_HOST), ports picked free now, its
  # token file in the job dir (required beyond loopback)
  RI_GATEWAY_HOST=${RI_GATEWAY_HOST:-$RI_NODE_IP}
  read -r -a RI_PORT_VALUES <<<"$RI_GATEWAY_PORT_VALUES"
  read -r -a RI_GATEWAY_VARS <<<"$RI_GATEWAY_PORT_VARS"
  read -r -a RI_PORT_VALUES <<<"$(ri_pick_ports "$RI_GATEWAY_HOST" "${RI_PORT_VALUES[@]}")"
  for i in "${!RI_GATEWAY_VARS[@]}"; do
    export "${RI_GATEWAY_VARS[$i]}=$RI_GATEWAY_HOST:${RI_PORT_VALUES[$i]}"
  done
  export RAYINFRA_TOKEN_FILE="$RI_JOB_DIR/gateway.token"
  # in the background: a trapped signal interrupts `wait`, not a foreground command
  ri_driver_command &
  RI_DRIVER_PID=$!
  RI_DEADLINE=$((SECONDS + RI_DRIVER_TIMEOUT_S))
  while kill -0 "$RI_DRIVER_PID" 2>/dev/null; do
    if [ "$SECONDS" -ge "$RI_DEADLINE" ]; then
      ri_log "the driver command did not finish within ${RI_DRIVER_TIMEOUT_S} s: stopping the cluster"
      exit 1
    fi
    sleep 0.2
  done
  if ! wait "$RI_DRIVER_PID"; then
    ri_log "the driver command failed: stopping the cluster"
    exit 1
  fi
  RI_DRIVER_PID=""
  ri_write_connection running
  ri_log "rayinfra is running on $RI_GCS_ADDRESS"
else
  ri_write_connection none
fi

set +e
wait "$RI_HEAD_SRUN_PID"
RI_RC=$?
ri_log "the Ray head step ended (exit code $RI_RC)"
exit "$RI_RC"

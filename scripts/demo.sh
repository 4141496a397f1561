#!/usr/bin/env bash
# Set up (idempotent), start a local rayinfra runtime on 127.0.0.1 and show it working.
# It keeps running afterwards: `.venv/bin/rayinfra stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
rayinfra hardware
rayinfra start --daemon
rayinfra status
cat <<TXT

rayinfra is running (dashboard above). Try:
  .venv/bin/rayinfra status --json
  .venv/bin/rayinfra config show
  .venv/bin/rayinfra stop
TXT

#!/usr/bin/env bash
# Set up (idempotent), start a local rayinfra runtime on 127.0.0.1 and show it working:
# hardware, status, and one task of each built-in kind with its result.
# It keeps running afterwards: `.venv/bin/rayinfra stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
rayinfra hardware
# the runtime plus the Docker-free `local` profile (redis-server and prometheus as supervised
# processes, each with a real health check); --profile dspy would start the nine containers
rayinfra start --daemon --profile local
rayinfra status
rayinfra services status
for payload in \
  '{"type": "noop"}' \
  '{"type": "echo", "hello": "world", "n": [1, 2, 3]}' \
  '{"type": "sleep", "seconds": 0.5}' \
  '{"type": "shell", "argv": ["uname", "-sr"]}' \
  '{"type": "python", "function": "platform:python_version"}'; do
  echo "::: rayinfra submit --wait '$payload'"
  rayinfra submit --wait "$payload"
done
rayinfra task list
cat <<TXT

rayinfra is running (dashboard above). Try:
  .venv/bin/rayinfra submit --wait '{"type": "echo", "x": 1}'
  .venv/bin/rayinfra status --json
  .venv/bin/rayinfra logs redis --tail 5
  .venv/bin/rayinfra stop            # also stops the services (--keep-services leaves them)
TXT

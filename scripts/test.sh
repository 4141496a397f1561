#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, types, unit, integration, e2e.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "::: ruff";  ruff check .
echo "::: mypy";  mypy
echo "::: pytest"
exec python -m pytest -p no:cacheprovider "$@"

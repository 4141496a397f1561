# shellcheck shell=bash
# Sourced. Create .venv and install rayinfra with its test extra; skipped when pyproject is unchanged.
# Idempotent and quick on a machine that already has it.
_ri_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_ri_py="${RAYINFRA_PYTHON:-python3}"
if [ ! -x "$_ri_root/.venv/bin/python" ]; then
  "$_ri_py" -m venv "$_ri_root/.venv"
fi
_ri_stamp="$_ri_root/.venv/.rayinfra-installed"
_ri_want="$(sha256sum "$_ri_root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$_ri_stamp" 2>/dev/null)" != "$_ri_want" ]; then
  "$_ri_root/.venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # compat: a plain path entry in a .pth file; the default import-hook finder costs every
  # process ~15 ms at start-up (each `rayinfra` command: docs/benchmarks.md "CLI").
  # setuptools calls the mode transitional: if a release drops it, install the default way.
  "$_ri_root/.venv/bin/python" -m pip install -q --disable-pip-version-check \
    --config-settings editable_mode=compat -e "${_ri_root}[test]" 2>/dev/null \
    || "$_ri_root/.venv/bin/python" -m pip install -q --disable-pip-version-check \
      -e "${_ri_root}[test]"
  echo "$_ri_want" > "$_ri_stamp"
fi
export PATH="$_ri_root/.venv/bin:$PATH"
unset _ri_root _ri_py _ri_stamp _ri_want

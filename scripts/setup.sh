# Sourced by scripts/*.sh: run every .ci/setup.d step (idempotent: installs only what is missing).
_ri_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for _ri_f in "$_ri_here"/.ci/setup.d/*.sh; do
  # shellcheck disable=SC1090
  source "$_ri_f"
done
unset _ri_here _ri_f

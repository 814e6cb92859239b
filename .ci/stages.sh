#!/usr/bin/env bash
# The stages of `make test`, each timed (budgets: docs/operations.md, from the conventions page).
# Exits non-zero on the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== stage: $name"
  "$@"
  echo "=== stage: $name took $((SECONDS - t0)) s"
}
PYTEST=(.venv/bin/pytest -q -p no:cacheprovider)
stage install      make -s install apt
stage lint         .venv/bin/ruff check .
stage types        make -s types
stage unit         "${PYTEST[@]}" tests/unit tests/raft tests/lincheck tests/test_layering.py
stage simulations  "${PYTEST[@]}" tests/sim
stage e2e          "${PYTEST[@]}" -n 3 --dist loadfile --durations=12 tests/e2e  # three workers: mostly waiting on agents
stage "fuzz smoke" make -s fuzz-smoke  # 3 s per decoder (the DNS smoke is in e2e: test_dns_fuzz.py)
stage "fault lab"  "${PYTEST[@]}" tests/lab
stage chaos        make -s chaos
stage "py-consul suite" .venv/bin/python tests/pyconsul/run.py
if [[ $(id -u) == 0 ]]; then  # VMs need root (CI is root)
  stage "lab test"  make -s lab-test
else
  echo "=== stage: lab test skipped (needs root)"
fi

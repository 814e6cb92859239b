#!/usr/bin/env bash
# The stages of `make test`, each timed. Exits non-zero on the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== stage: $name"
  "$@"
  echo "=== stage: $name took $((SECONDS - t0)) s"
}
stage install  make -s install apt
stage lint     .venv/bin/ruff check .
stage types    make -s types
stage unit     .venv/bin/pytest -q -p no:cacheprovider tests/unit tests/test_layering.py
stage e2e      .venv/bin/pytest -q -p no:cacheprovider tests/e2e

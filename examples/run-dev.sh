#!/usr/bin/env bash
# `make run`: a dev agent with the example services, plus a tiny demo web server on 127.0.0.1:18080
# so that the `web` service's HTTP check passes and `dig web.service.murmur SRV` answers.
# Both processes are stopped by PID when the agent exits (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/python" -m http.server 18080 --bind 127.0.0.1 --directory examples >/dev/null 2>&1 &
web_pid=$!
trap 'kill "$web_pid" 2>/dev/null || true' EXIT
echo "demo web server on 127.0.0.1:18080 (pid $web_pid); starting the agent (Ctrl-C stops both)"
echo "try: dig @127.0.0.1 -p 8600 web.service.murmur SRV   |   curl localhost:8500/v1/catalog/services"
"$BIN/murmur" agent --dev --config-dir examples/dev "$@"

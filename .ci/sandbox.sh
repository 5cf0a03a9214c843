#!/usr/bin/env bash
# Start the gateway locally in sandbox mode (no Clearout token needed) on port 8080.
# It prints the demo team key; see README for a curl call.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
venv=${GATEWAY_VENV:-.venv}
[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e .
export GATEWAY_SANDBOX=1 GATEWAY_LOG_FORMAT=${GATEWAY_LOG_FORMAT:-console}
exec "$venv/bin/clearout-gateway" serve "$@"

#!/usr/bin/env bash
# Everything the test suite needs, from a fresh Debian/Ubuntu machine with Python 3.11+:
# the servers the tests start (redis-server, prometheus/promtool, curl), a virtualenv
# with the project and its dev dependencies, the linters, then pytest.
# Extra arguments go to pytest (e.g. `bash .ci/test.sh -k cache`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl)
python_bin=${PYTHON:-python3}
if ! "$python_bin" -c 'import venv, ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing with apt-get: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]}. Install them first: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

"$python_bin" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python 3.11+ is required, found {sys.version.split()[0]}")
PY

venv=${GATEWAY_VENV:-.venv}
[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# Exact versions and hashes from the lock (pip-compile --extra dev of
# pyproject.toml), then the project itself without resolving anything again.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
  --requirement requirements-dev.lock
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .

"$venv/bin/ruff" check .
"$venv/bin/mypy"
exec "$venv/bin/python" -m pytest "$@"

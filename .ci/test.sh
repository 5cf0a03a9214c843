#!/usr/bin/env bash
# Everything the test suite needs, from a fresh Debian/Ubuntu machine with Python 3.11+:
# the servers the tests start (redis-server, prometheus/promtool, curl), podman, runc
# and debootstrap for building and running the image (tests/test_container.py), a
# virtualenv with the project and its dev dependencies, the platform linters in their
# own virtualenv (.ci/tools.sh), the linters, then pytest, every marker included.
# Extra arguments go to pytest (e.g. `bash .ci/test.sh -k cache`, or
# `bash .ci/test.sh -m "not container"` to leave out the image build).
# `bash .ci/test.sh --fast [pytest args]` skips installing and linting: the quick
# loop once .venv exists.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${GATEWAY_VENV:-.venv}
if [ "${1:-}" = "--fast" ]; then
  shift
  exec "$venv/bin/python" -m pytest "$@"
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl)
# runc and debootstrap live in /usr/sbin, which a non-login PATH may lack.
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
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

[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# Exact versions and hashes from the locks (uv pip compile --universal --extra dev
# of pyproject.toml, and its build backend), then the project itself without
# resolving anything again.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
  --requirement requirements-dev.lock --requirement requirements-build.lock
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
  --no-build-isolation -e .
# checkov and hadolint, pinned in .ci/tools.lock, in .venv-tools (tests/test_platform.py).
bash .ci/tools.sh

"$venv/bin/ruff" check .
"$venv/bin/mypy"
exec "$venv/bin/python" -m pytest "$@"

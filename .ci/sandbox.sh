#!/usr/bin/env bash
# Start the gateway locally in sandbox mode (no Clearout token needed): a built-in
# Clearout look-alike answers, and the demo team key is `sandbox-demo-key`.
#
#   bash .ci/sandbox.sh                      # http://127.0.0.1:8080
#   bash .ci/sandbox.sh --port 9090          # --host / --port go to `clearout-gateway serve`
#   GATEWAY_HOST=0.0.0.0 bash .ci/sandbox.sh # reachable from other machines
#
# Loopback unless told otherwise, and no drain delay on Ctrl-C (GATEWAY_DRAIN_DELAY_SECONDS=0
# unless set). The venv is installed from the hashed locks only when pyproject.toml or a lock
# changed since the last install (a stamp in the venv holds their hash). Once the port answers
# /healthz, one "ready" line with a curl example is printed; the gateway's own log is as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
venv=${GATEWAY_VENV:-.venv}
stamp="$venv/.clearout-gateway-install"

[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
wanted=$(cat pyproject.toml requirements.lock requirements-build.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x "$venv/bin/clearout-gateway" ]; then
  echo "installing the gateway into $venv (pyproject.toml or a lock changed)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
    --requirement requirements.lock --requirement requirements-build.lock
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation -e .
  echo "$wanted" >"$stamp"
fi

export GATEWAY_SANDBOX=1 GATEWAY_LOG_FORMAT=${GATEWAY_LOG_FORMAT:-console}
export GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1} GATEWAY_PORT=${GATEWAY_PORT:-8080}
export GATEWAY_DRAIN_DELAY_SECONDS=${GATEWAY_DRAIN_DELAY_SECONDS:-0}

# Where to knock: the flags win over the environment, as they do in `serve`.
host=$GATEWAY_HOST port=$GATEWAY_PORT
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --host) host=${args[i + 1]:-$host} ;;
    --host=*) host=${args[i]#--host=} ;;
    --port) port=${args[i + 1]:-$port} ;;
    --port=*) port=${args[i]#--port=} ;;
  esac
done
case $host in 0.0.0.0 | "" | "::" | "[::]") host=127.0.0.1 ;; esac
[[ $host == *:* && $host != \[* ]] && host="[$host]"
base="http://$host:$port"

"$venv/bin/clearout-gateway" serve "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT HUP

for _ in $(seq 1 200); do
  kill -0 "$server" 2>/dev/null || break
  if "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$base/healthz" 2>/dev/null; then
    sleep 0.3 # the gateway writes its log every 0.2 s: let "listening" come first
    echo "ready: $base (key sandbox-demo-key) -- curl -X POST '$base/v2/email_finder/instant'" \
      "-H 'Authorization: sandbox-demo-key' -H 'Content-Type: application/json'" \
      "-d '{\"name\": \"Steven Morris\", \"domain\": \"apple.com\"}'"
    break
  fi
  sleep 0.1
done

# The first wait returns early when a trapped signal arrives; the second one
# collects the gateway's own exit status once it has drained.
status=0
wait "$server" || status=$?
if kill -0 "$server" 2>/dev/null; then
  status=0
  wait "$server" || status=$?
fi
exit "$status"

#!/usr/bin/env bash
# Set up a development environment: the virtualenv with Loopwright and its dev/bench extras,
# and the system packages the platform and its tests use (redis-server; bubblewrap for the
# sandbox). Installs system packages with apt-get when running as root; otherwise prints the
# one command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}: install with 'sudo apt-get install -y ${need[*]}'" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q -e ".[dev,bench]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import loopwright.runner, rq, redis" \
  || { echo "setup: the package did not install" >&2; exit 1; }
touch "$VENV/.installed"

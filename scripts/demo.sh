#!/usr/bin/env bash
# The main job: set up, boot the tiny guest on the default driver, show it READY, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
vmkit=.venv/bin/vmkit
export VMKIT_HOME="${VMKIT_HOME:-$PWD/.demo-home}"
"$vmkit" rm --force demo >/dev/null 2>&1 || true
"$vmkit" run demo
"$vmkit" ls
"$vmkit" stop demo
"$vmkit" rm demo

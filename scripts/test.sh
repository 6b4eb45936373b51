#!/usr/bin/env bash
# Set up, then run lint, types and the whole test suite (unit, contract, e2e on real QEMU/TCG).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layer contract of docs/architecture.md (pyproject.toml)
.venv/bin/python -m pytest -n 2 "$@"

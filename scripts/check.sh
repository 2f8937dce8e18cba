#!/usr/bin/env bash
# Every check CI runs, in one command, in the current environment (no installs; .ci/run calls it after installing):
# ruff lint and format, mypy, then the whole test suite (the bad-input corpus, tests/cli, included).
# Usage: scripts/check.sh [--quick]
#   --quick  lint, format, types and the bad-input corpus only (about a minute; run the full suite before you push)
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg PYTHONHASHSEED=0
echo "== ruff (lint) =="
ruff check src tests benchmarks scripts
echo "== ruff (format) =="
ruff format --check src tests benchmarks scripts
echo "== mypy =="
mypy
if [[ "${1:-}" == "--quick" ]]; then
    echo "== bad-input corpus =="
    python -m pytest -q -p no:cacheprovider tests/cli
else
    echo "== tests =="
    python -m pytest -q -p no:cacheprovider
fi

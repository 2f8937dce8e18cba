#!/usr/bin/env bash
# Every check CI runs, locally, in the current environment (no installs): lint, format, types, the bad-input corpus
# first (fast, and the promise users rely on), then the whole test suite. Usage: scripts/check.sh [--quick]
#   --quick  lint, types and the bad-input corpus only (about a minute; run the full suite before you push)
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg PYTHONHASHSEED=0
echo "== ruff (lint) =="
ruff check src tests benchmarks scripts
echo "== ruff (format) =="
ruff format --check src tests benchmarks scripts
echo "== mypy =="
mypy
echo "== bad-input corpus =="
python -m pytest -q -p no:cacheprovider tests/cli
if [[ "${1:-}" == "--quick" ]]; then
    exit 0
fi
echo "== tests =="
python -m pytest -q -p no:cacheprovider

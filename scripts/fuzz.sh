#!/usr/bin/env bash
# Fuzz the running service's OpenAPI schema with schemathesis (>= 1,000 generated cases): the
# run must report 0 responses with a 5xx status and 0 schema violations.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/fuzz.py --max-examples "${MAX_EXAMPLES:-30}" --seed "${SEED:-1}" "$@"

#!/usr/bin/env bash
# Fuzz the running service's OpenAPI schema with schemathesis (>= 3,000 generated cases, against a Redis store with VIDEO_ROOT and API keys on): the
# run must report 0 responses with a 5xx status and 0 schema violations.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/fuzz.py --max-examples "${MAX_EXAMPLES:-150}" --seed "${SEED:-1}" "$@"

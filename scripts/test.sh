#!/usr/bin/env bash
# The test command: installs what the tests need where it is missing (redis-server, PostgreSQL
# and Debian's Chromium with its driver, through apt; the project's venv through
# scripts/install.sh), then runs
# pytest with any arguments given. Idempotent; apt runs only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# PostgreSQL for the PostgreSQL MaskStore's tests (tests/postgres_server.py starts it)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/install.sh
exec .venv/bin/python -m pytest "$@"

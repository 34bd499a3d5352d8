#!/usr/bin/env bash
# Run sam2-serve on this machine: install (idempotent), get the tiny checkpoint, serve run.
#   scripts/run.sh                          # needs checkpoints/sam2.1_hiera_tiny.pt (downloaded)
#   SAM2_SERVE_WEIGHTS=random scripts/run.sh  # no checkpoint: random weights, meaningless masks
#   scripts/run.sh serve_config.yaml        # another config
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-serve_config.local.yaml}

scripts/install.sh
if [ "${SAM2_SERVE_WEIGHTS:-checkpoint}" != random ]; then
  if ! scripts/download_checkpoints.sh sam2.1_hiera_tiny; then
    echo "No checkpoint, so no service. To run with random weights (tests, offline" >&2
    echo "development; masks are meaningless): SAM2_SERVE_WEIGHTS=random scripts/run.sh" >&2
    exit 1
  fi
fi
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}  # a local cluster without token auth
export TQDM_DISABLE=1
# Absolute paths: Ray's worker processes do not start in this folder.
export SAM2_SERVE_CHECKPOINT_DIR=${SAM2_SERVE_CHECKPOINT_DIR:-$PWD/checkpoints}
export SAM2_SERVE_STORAGE_ROOT=${SAM2_SERVE_STORAGE_ROOT:-$PWD/var/sessions}
exec .venv/bin/serve run "$config"

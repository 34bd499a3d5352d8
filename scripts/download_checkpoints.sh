#!/usr/bin/env bash
# Download official SAM 2 / SAM 2.1 checkpoints from Meta into checkpoints/.
#   scripts/download_checkpoints.sh                      # sam2.1_hiera_tiny
#   scripts/download_checkpoints.sh sam2.1_hiera_large sam2_hiera_small
# The URLs come from the model registry (deployments/protocol/registry.py), the one place they live.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p checkpoints

urls=$("$python" -c '
import sys
from deployments.protocol import ModelLoadError
from deployments.protocol.registry import official_downloads
try:
    for url, file in official_downloads(sys.argv[1:] or ["sam2.1_hiera_tiny"]):
        print(url, file)
except ModelLoadError as exc:
    sys.exit(str(exc))
' "$@")
echo "$urls" | while read -r url file; do
  if [ -s "checkpoints/$file" ]; then
    echo "checkpoints/$file is already there"
    continue
  fi
  echo "downloading $url"
  if ! curl -fL --retry 3 --connect-timeout 20 -o "checkpoints/$file.part" "$url"; then
    rm -f "checkpoints/$file.part"
    echo "could not download $url: this network cannot reach Meta's servers." >&2
    echo "Copy $file into checkpoints/ by hand, or run with weights: random for tests." >&2
    exit 1
  fi
  mv "checkpoints/$file.part" "checkpoints/$file"
done

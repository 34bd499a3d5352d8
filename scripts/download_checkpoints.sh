#!/usr/bin/env bash
# Download official SAM 2 / SAM 2.1 checkpoints from Meta into checkpoints/.
#   scripts/download_checkpoints.sh                      # sam2.1_hiera_tiny
#   scripts/download_checkpoints.sh sam2.1_hiera_large sam2_hiera_small
#   HF_TOKEN=hf_... scripts/download_checkpoints.sh sam3    # the concept detector, into checkpoints/sam3
# The URLs come from the model registry (deployments/protocol/registry.py), the one place they live.
# facebook/sam3 is gated on the Hugging Face hub: accept its licence there, then pass a token.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p checkpoints

sam2_names=()
for name in "$@"; do
  if [ "$name" != sam3 ]; then
    sam2_names+=("$name")
    continue
  fi
  echo "downloading facebook/sam3 into checkpoints/sam3"
  "$python" -c '
import os
import sys
from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError
try:
    snapshot_download("facebook/sam3", local_dir="checkpoints/sam3", token=os.environ.get("HF_TOKEN"))
except GatedRepoError:
    sys.exit("facebook/sam3 is gated: accept its licence on huggingface.co, then set HF_TOKEN.")
except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
    sys.exit(f"could not reach the Hugging Face hub ({exc}). Copy a snapshot of facebook/sam3 "
             "into checkpoints/sam3 by hand, or run with weights: random for tests.")
'
done
[ $# -gt 0 ] && [ ${#sam2_names[@]} -eq 0 ] && exit 0
set -- "${sam2_names[@]}"

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

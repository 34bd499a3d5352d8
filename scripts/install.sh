#!/usr/bin/env bash
# Create .venv and install sam2-serve with its pinned dependencies. Idempotent.
#
# Order matters: torch first (2.13.0; on a CPU-only machine pip takes the local CPU wheel),
# then sam2 1.1.0 built without build isolation and without its CUDA extension (otherwise pip
# fetches a ~3 GB CUDA torch just to build it), then this project. constraints.txt keeps
# torch and torchvision (a sam2 requirement that we never import) at matching versions.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install -c constraints.txt torch==2.13.0 "setuptools>=77" wheel
.venv/bin/python -c "import sam2" 2>/dev/null ||
  SAM2_BUILD_CUDA=0 "${pip[@]}" install -c constraints.txt --no-build-isolation sam2==1.1.0
"${pip[@]}" install -c constraints.txt --no-build-isolation -e ".[dev]"

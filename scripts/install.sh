#!/usr/bin/env bash
# Create .venv and install sam2-serve with its pinned dependencies. Idempotent.
#
# Order matters: torch first (2.13.0; on a CPU-only machine pip takes the local CPU wheel),
# then sam2 1.1.0 built without build isolation and without its CUDA extension (otherwise pip
# fetches a ~3 GB CUDA torch just to build it), then this project. constraints.txt keeps
# torch and torchvision (a sam2 requirement that we never import) at matching versions; a
# torchvision that cannot be imported is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install -c constraints.txt torch==2.13.0 "setuptools>=77" wheel
.venv/bin/python -c "import sam2" 2>/dev/null ||
  SAM2_BUILD_CUDA=0 "${pip[@]}" install -c constraints.txt --no-build-isolation sam2==1.1.0
"${pip[@]}" install -c constraints.txt --no-build-isolation -e ".[dev]"
# torchvision comes with sam2's requirements, but where it cannot load its operators (the 0.28
# wheel on our CPU torch 2.13: "operator torchvision::nms does not exist") it must go:
# transformers imports any torchvision it finds, SAM 3's modeling module among others. Nothing
# of ours, nor sam2's video predictor, imports it; SAM 3's one torchvision operator (roi_align,
# for exemplar boxes) is ours (deployments/detector/roi_align.py). A torchvision that imports
# (a CUDA torch with its matching build, as in the Dockerfile) stays.
.venv/bin/python - 2>/dev/null <<'EOF' || "${pip[@]}" uninstall -y torchvision
try:
    import torchvision  # noqa: F401
except ModuleNotFoundError as missing:  # not installed: nothing to remove
    if missing.name != "torchvision":
        raise
EOF

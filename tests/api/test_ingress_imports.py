"""The ingress is HTTP only: importing it must not load the model's libraries."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_ingress_app_leaves_torch_opencv_and_pyav_out():
    code = (
        "import sys, ingress.app; "
        "print(sorted(m for m in ('torch', 'cv2', 'av', 'sam2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

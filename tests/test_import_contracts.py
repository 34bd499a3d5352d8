"""The layer contracts (``[tool.importlinter]`` in pyproject.toml) hold: ``lint-imports`` passes.

They keep the ingress free of the model's libraries and of Redis, the session store and the
client free of the server, the engine free of Ray, the protocol torch-free, and every package
free of import cycles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_lint_imports_keeps_every_contract():
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: run scripts/install.sh (dev extras)"
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"lint-imports failed:\n{output}"
    assert "0 broken" in output, output

"""The client is written once: ``scripts/unasync.py`` generates the synchronous client (and the
synchronous twin of ``test_every_method_async.py``) from the asyncio one. Regenerated into a
temporary folder, every generated file must equal the one in the tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {
    "sam2serve/client.py",
    "sam2serve/transport.py",
    "tests/client/test_every_method_sync.py",
}


def test_the_generated_files_are_current(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = {str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.py")}
    assert written == GENERATED
    stale = [
        name
        for name in sorted(written)
        if (tmp_path / name).read_text() != (ROOT / name).read_text()
    ]
    assert not stale, f"not current, run `python scripts/unasync.py`: {stale}"

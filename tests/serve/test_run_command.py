"""The README's run command: scripts/run.sh (install, then serve run serve_config.local.yaml)
with random weights serves /health and /docs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_run_script_serves_health_and_docs(tmp_path):
    env = os.environ | {
        "SAM2_SERVE_WEIGHTS": "random",
        "SAM2_SERVE_STORAGE_ROOT": str(tmp_path / "sessions"),
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        ["scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        health = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get("http://127.0.0.1:8000/health", timeout=5)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(2)
        assert health is not None and health.status_code == 200, (
            tmp_path / "serve.log"
        ).read_text()[-3000:]
        assert health.json()["ready"] is True
        assert httpx.get("http://127.0.0.1:8000/docs", timeout=5).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        subprocess.run([str(ROOT / ".venv/bin/ray"), "stop", "--force"], capture_output=True)

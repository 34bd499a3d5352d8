"""A small fixed-seed schemathesis run against the real service: no 5xx response and no
response outside the OpenAPI schema (scripts/fuzz.sh runs the full >= 1,000 cases)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    report = tmp_path / "junit.xml"
    command = [
        sys.executable,
        str(ROOT / "scripts/fuzz.py"),
        "--max-examples",
        "3",
        "--seed",
        "7",
        "--port",
        str(free_port()),
        "--report",
        str(report),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "generated" in result.stdout and report.exists()

"""Paths of the deployment files and what the Grafana dashboard queries, for the tests here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "sam2-serve.json"
CRD = ROOT.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"

_METRIC = re.compile(r"\bray_[a-z0-9_]+")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target."""
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def queried_metrics(board: dict[str, Any]) -> set[str]:
    """Every exported metric name (``ray_...``) the panels query."""
    return {name for expr in queries(board) for name in _METRIC.findall(expr)}

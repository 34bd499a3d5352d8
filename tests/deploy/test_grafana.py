"""The Grafana dashboard: valid JSON Grafana can import, the panels the issue asks for, and only
sam2 metrics the code defines (a renamed metric would leave a panel silently empty)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.deploy.conftest import ROOT, dashboard, queried_metrics, queries

# Prometheus names Ray exports for each kind of ray.serve.metrics metric.
_SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}


def defined_sam2_metrics() -> dict[str, str]:
    """name -> kind of every ``Counter``/``Gauge``/``Histogram("sam2_...")`` in the service code."""
    found = {}
    for path in [*Path(ROOT, "deployments").rglob("*.py"), *Path(ROOT, "ingress").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            kind = getattr(node.func, "id", getattr(node.func, "attr", None))
            name = node.args[0]
            if (
                kind in _SUFFIXES
                and isinstance(name, ast.Constant)
                and str(name.value).startswith("sam2_")
            ):
                found[name.value] = kind
    return found


def exported_names(metrics: dict[str, str]) -> set[str]:
    return {f"ray_{name}{s}" for name, kind in metrics.items() for s in _SUFFIXES[kind]}


def test_dashboard_is_importable_json():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_queries_exactly_the_sam2_metrics_the_code_defines():
    defined = defined_sam2_metrics()
    queried = {name for name in queried_metrics(dashboard()) if name.startswith("ray_sam2_")}
    assert queried <= exported_names(defined)
    # every metric has a panel
    for name, kind in defined.items():
        assert any(f"ray_{name}{s}" in queried for s in _SUFFIXES[kind]), name


def test_dashboard_has_the_panels_an_operator_needs():
    board = dashboard()
    by_title = {panel["title"]: panel for panel in board["panels"]}
    exprs = {
        title: " ".join(t["expr"] for t in p.get("targets", [])) for title, p in by_title.items()
    }
    assert "sum by (replica) (ray_sam2_active_sessions" in exprs["Active sessions per replica"]
    latency = exprs["Click latency p50 / p95"]
    for quantile in ("0.5", "0.95"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) (rate(ray_sam2_click_latency_s_bucket"
            in latency
        )
    assert "rate(ray_sam2_frames_propagated_total" in exprs["Frames/s"]
    assert (
        "sum by (code) (rate(ray_sam2_rejected_requests_total" in exprs["Rejected requests by code"]
    )
    serve = {name for name in queried_metrics(board) if name.startswith("ray_serve_")}
    assert {
        "ray_serve_num_http_requests_total",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_serve_deployment_replica_healthy",
    } <= serve
    assert all("$__rate_interval" in expr for expr in queries(board) if "rate(" in expr)

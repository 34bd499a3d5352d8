"""Prometheus export end to end: the app on a local Ray cluster with a metrics export port, one
session, a click, a propagation and a rejected request over HTTP, then the scrape Prometheus
would take holds every sam2 metric with its labels, and every metric the dashboard plots."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import dashboard, queried_metrics
from tests.serve.conftest import Stack, deploy, stack_settings
from tests.servers import free_port, local_ray
from tests.videos import write_video

APP = "metrics"
NUM_FRAMES = 6


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Cluster:
    http_port: int
    metrics_port: int

    def scrape(self) -> list[Sample]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return [
            Sample(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Its own Ray cluster: the metrics export port is fixed when Ray starts."""
    ports = Cluster(http_port=free_port(), metrics_port=free_port())
    with local_ray(http_port=ports.http_port, num_cpus=2, _metrics_export_port=ports.metrics_port):
        yield ports


@pytest.fixture(scope="module")
def stack(cluster, tmp_path_factory) -> Stack:
    settings = stack_settings(tmp_path_factory.mktemp("sessions"), min_replicas=1, max_replicas=1)
    return deploy(cluster.http_port, APP, settings)


def _one_of_each_request(stack: Stack, video) -> None:
    created = stack.upload(video)
    assert created.status_code == 201, created.text
    base = f"/api/v1/sessions/{created.json()['session_id']}"
    click = stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    assert click.status_code == 200, click.text
    propagated = stack.client.post(f"{base}/propagate", json={"direction": "forward"})
    assert propagated.status_code == 200 and propagated.json()["frames"] == NUM_FRAMES
    missing = stack.client.get("/api/v1/sessions/no-such-session")
    assert missing.json()["error"]["code"] == "not_found"


def _missing(samples: list[Sample], expected: dict[str, dict[str, str]]) -> list[str]:
    """The expected metrics without a sample carrying the expected labels (a value of "*" asks
    only that the label is there and not empty)."""

    def matches(sample: Sample, labels: dict[str, str]) -> bool:
        return all(
            sample.labels.get(key) and value in ("*", sample.labels[key])
            for key, value in labels.items()
        )

    return [
        name
        for name, labels in expected.items()
        if not any(s.name == name and matches(s, labels) for s in samples)
    ]


def test_scrape_holds_every_sam2_metric_with_its_labels(cluster, stack, tmp_path):
    video = write_video(tmp_path / "clip.mp4", num_frames=NUM_FRAMES)
    model = stack.client.get("/api/v1/models").json()["default"]
    _one_of_each_request(stack, video)

    replica = {"application": APP, "deployment": "SAM2Replica", "replica": "*", "model": model}
    expected = {
        "ray_sam2_active_sessions": replica,
        "ray_sam2_frames_propagated_total": replica,
        "ray_sam2_click_latency_s_bucket": replica | {"le": "+Inf"},
        "ray_sam2_click_latency_s_count": replica,
        "ray_sam2_click_latency_s_sum": replica,
        "ray_sam2_propagation_fps": replica,
        "ray_sam2_rejected_requests_total": {"code": "not_found"},
    }
    # Every series the Grafana dashboard plots must exist under that name too.
    plotted = queried_metrics(dashboard())
    # Ray exports what each worker reports every few seconds: poll the endpoint for a while.
    samples, missing = [], [*expected, *plotted]
    for _ in range(60):
        samples = cluster.scrape()
        names = {s.name for s in samples}
        missing = _missing(samples, expected) + sorted(plotted - names)
        if not missing:
            break
        time.sleep(1)
    assert missing == [], sorted({s.name for s in samples if "sam2" in s.name})

    def value(name: str) -> float:
        return sum(
            s.value for s in samples if s.name == name and s.labels.get("application") == APP
        )

    assert value("ray_sam2_active_sessions") == 1
    assert value("ray_sam2_frames_propagated_total") == NUM_FRAMES
    assert value("ray_sam2_click_latency_s_count") == 1
    assert value("ray_sam2_propagation_fps") > 0
    rejected = [s for s in samples if s.name == "ray_sam2_rejected_requests_total"]
    assert sum(s.value for s in rejected if s.labels["code"] == "not_found") == 1

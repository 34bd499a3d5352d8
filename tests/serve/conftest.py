"""The real stack for HTTP tests: a local Ray cluster, Serve with the sam2-serve app (CPU,
random weights at a small image size) and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve

from deployments.app import build_app
from tests.servers import RedisServer, free_port, local_ray
from tests.videos import write_video


def stack_settings(storage_root: Path, **overrides: Any) -> dict[str, Any]:
    """Two CPU replicas of the test model sharing two cores."""
    return {
        "weights": "random",
        "image_size": 128,
        "device": "cpu",
        "torch_threads": 1,
        "storage_root": str(storage_root),
        "min_replicas": 2,
        "max_replicas": 2,
        "max_sessions": 2,
        "replica_num_cpus": 0,
        "ingress_num_cpus": 0,
        "routing_stats_period_s": 0.5,
        "retry_after_s": 7,
    } | overrides


class Stack:
    """A deployed app and an HTTP client for it."""

    def __init__(self, name: str, base_url: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = settings
        self.client = httpx.Client(base_url=base_url, timeout=120)
        self.async_client = lambda: httpx.AsyncClient(base_url=base_url, timeout=120)

    def upload(self, video: Path, **form: Any) -> httpx.Response:
        with video.open("rb") as data:
            files = {"file": (video.name, data, "video/mp4")}
            return self.client.post("/api/v1/sessions", files=files, data=form)


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    port = free_port()
    with local_ray(http_port=port, num_cpus=2):
        yield port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def deploy(port: int, name: str, settings: dict[str, Any]) -> Stack:
    """serve.run the app under /<name>, then wait until /health sees every replica."""
    serve.run(build_app(settings), name=name, route_prefix=f"/{name}")
    stack = Stack(name, f"http://127.0.0.1:{port}/{name}", settings)
    for _ in range(120):
        health = stack.client.get("/health")
        expected = settings["min_replicas"] * settings["max_sessions"]
        if health.status_code == 200 and health.json()["capacity"] == expected:
            return stack  # every replica has reported its slots
        time.sleep(0.5)
    raise RuntimeError(f"{name} did not become healthy: {health.text}")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", num_frames=16)

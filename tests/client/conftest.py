"""One real stack for the client's tests (package scope: a Ray cluster and a deploy cost tens of
seconds): a local Ray cluster, Serve with the sam2-serve app (one CPU replica, random weights at
a small image size), a real redis-server, API keys, a VIDEO_ROOT and a concept detector (its
score threshold keeps two instances of ``TEXT`` on frame 1). Two session slots, so a test can
fill them and see real 503s; ``Retry-After`` is 1 s so retries wait little."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sam2serve import Client, RetryPolicy
from tests.serve.concepts import concept, detector_settings
from tests.serve.conftest import deploy, stack_settings
from tests.servers import RedisServer, free_port, local_ray
from tests.videos import write_video

API_KEY = "client-key-0123456789"
NUM_FRAMES = 12
SIZE = (160, 120)
TEXT = "grasper"


@dataclass(frozen=True)
class Service:
    url: str
    api_key: str
    video_root: Path


@pytest.fixture(scope="package")
def service(tmp_path_factory) -> Iterator[Service]:
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    video_root = tmp_path_factory.mktemp("video_root")
    write_video(video_root / "clip.mp4", num_frames=NUM_FRAMES, size=SIZE)
    port = free_port()
    try:
        with local_ray(http_port=port, num_cpus=2):
            yield from _serve(tmp_path_factory, redis, video_root, port)
    finally:
        redis.stop()


def _serve(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer, video_root: Path, port: int
) -> Iterator[Service]:
    """The app deployed on the running cluster; its HTTP client closed at the end."""
    grasper = concept(video_root / "clip.mp4", 1, TEXT, count=2)
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"),
        redis_url=redis.url,
        video_root=str(video_root),
        api_keys=[API_KEY],
        min_replicas=1,
        max_replicas=1,
        max_sessions=2,
        retry_after_s=1,
        detector=detector_settings(grasper.threshold),
        detector_num_cpus=0,
    )
    stack = deploy(port, "client", settings)
    try:
        yield Service(str(stack.client.base_url).rstrip("/"), API_KEY, video_root)
    finally:
        stack.client.close()


@pytest.fixture(scope="package")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", NUM_FRAMES, SIZE)


@pytest.fixture
def client(service) -> Iterator[Client]:
    """A client that retries 503s for up to a minute, at the server's 1 s Retry-After."""
    retry = RetryPolicy(max_attempts=60, max_wait_s=60)
    with Client(service.url, api_key=service.api_key, retry=retry) as client:
        yield client

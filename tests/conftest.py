"""Shared fixtures: the real SAM 2 model with random weights at a small image size, built once."""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local test clusters without token auth

from pathlib import Path

import pytest

from deployments.engine import SessionEngine
from deployments.engine.models import load_predictor
from deployments.protocol import EngineSettings
from tests.videos import write_video

TEST_IMAGE_SIZE = 128


def engine_settings(storage_root: Path, **overrides) -> EngineSettings:
    """Settings of the test model: real SAM 2.1 tiny code, random weights, CPU, small size."""
    values = dict(
        weights="random",
        image_size=TEST_IMAGE_SIZE,
        device="cpu",
        torch_threads=2,
        storage_root=storage_root,
    )
    return EngineSettings(**(values | overrides))


@pytest.fixture(scope="session")
def predictor(tmp_path_factory):
    """One SAM2VideoPredictor for the whole run: every engine in the tests shares it."""
    return load_predictor(engine_settings(tmp_path_factory.mktemp("unused")))


@pytest.fixture
def engine(tmp_path, predictor):
    engine = SessionEngine(engine_settings(tmp_path / "sessions"), predictor=predictor)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def video(tmp_path_factory) -> Path:
    """24 frames, 160x120, 10 fps."""
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4")


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server for the run (tests/postgres_server.py): its URL."""
    from tests.postgres_server import PostgresServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip(
            "PostgreSQL is not installed: apt-get install postgresql (scripts/test.sh does)"
        )
    server = PostgresServer().start()
    yield server.url
    server.close()

"""Session lifecycle on the engine: create, capacity, failures that leave nothing, delete."""

from __future__ import annotations

import pytest

from deployments.engine import (
    BadVideoError,
    CapacityError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    SessionEngine,
    VideoOptions,
)
from tests.conftest import engine_settings


def test_created_session_describes_its_video(engine, video):
    info = engine.create_session(video, VideoOptions(max_side=80))
    assert info.status == "ready"
    assert info.model == "sam2.1_hiera_tiny"
    assert (info.video.num_frames, info.video.width, info.video.height) == (24, 80, 60)
    assert info.objects == []
    assert len(info.session_id) >= 22  # 128 random bits, URL-safe
    assert engine.session(info.session_id).info() == info


def test_sessions_beyond_capacity_are_refused(tmp_path, predictor, video):
    engine = SessionEngine(engine_settings(tmp_path, max_sessions=2), predictor=predictor)
    try:
        engine.create_session(video)
        engine.create_session(video)
        with pytest.raises(CapacityError):
            engine.create_session(video)
        assert engine.free_slots == 0
    finally:
        engine.close()


def test_failed_creation_leaves_no_files_and_frees_the_slot(engine, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(BadVideoError):
        engine.create_session(junk, session_id="failed-session")
    assert not (engine.settings.storage_root / "failed-session").exists()
    assert engine.active_sessions == 0


def test_session_ids_that_could_escape_the_root_are_refused(engine, video):
    with pytest.raises(InvalidRequestError):
        engine.create_session(video, session_id="../../etc")


def test_a_session_id_in_use_is_a_conflict(engine, video):
    engine.create_session(video, session_id="same-id-twice")
    with pytest.raises(ConflictError):
        engine.create_session(video, session_id="same-id-twice")
    assert engine.active_sessions == 1


def test_delete_frees_the_slot_and_every_file(engine, video):
    info = engine.create_session(video)
    directory = engine.session(info.session_id).directory
    assert any(directory.iterdir())
    engine.delete_session(info.session_id)
    assert not directory.exists()
    assert engine.active_sessions == 0
    with pytest.raises(NotFoundError):
        engine.session(info.session_id)
    with pytest.raises(NotFoundError):
        engine.delete_session(info.session_id)

"""Session lifecycle on the engine: create, capacity, failures that leave nothing, delete."""

from __future__ import annotations

import pytest

from deployments.engine import SessionEngine
from deployments.protocol import (
    BadVideoError,
    CapacityError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
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


def test_shutdown_keeps_files_and_another_engine_restores_the_session(tmp_path, predictor, video):
    from deployments.protocol import Prompt, PropagationRequest

    first = SessionEngine(engine_settings(tmp_path), predictor=predictor)
    sid = first.create_session(video).session_id
    session = first.session(sid)
    prompt = Prompt(frame_index=0, obj_id=1, points=[(40, 60)])
    session.add_prompt(prompt)
    list(session.propagate(PropagationRequest(direction="forward", max_frames=5)))
    masks = list(session.masks.frames())
    first.shutdown()
    assert (tmp_path / sid / "masks.sqlite").exists()

    second = SessionEngine(engine_settings(tmp_path), predictor=predictor)
    try:
        restored = second.open_session(sid)
        restored.rebuild(
            [{"op": "prompt", "prompt": prompt.model_dump(mode="json")}], {1: ("ball", None)}
        )
        assert [(o.obj_id, o.name, o.prompt_frames) for o in restored.objects()] == [
            (1, "ball", [0])
        ]
        assert list(restored.masks.frames()) == masks  # the MaskStore is left as it was
        assert restored.add_prompt(Prompt(frame_index=3, obj_id=1, points=[(60, 60)])).masks
    finally:
        second.close()
    third = SessionEngine(engine_settings(tmp_path), predictor=predictor)
    with pytest.raises(NotFoundError):
        third.open_session("gone-session")
    assert third.active_sessions == 0
    third.close()


def test_postgres_masks_outlive_the_replica_and_go_with_the_deleted_session(
    tmp_path, predictor, video, postgres_url
):
    import psycopg

    from deployments.protocol import Prompt, PropagationRequest

    settings = engine_settings(
        tmp_path, mask_store="postgres", SAM2_SERVE_DATABASE_URL=postgres_url
    )
    first = SessionEngine(settings, predictor=predictor)
    sid = first.create_session(video).session_id
    session = first.session(sid)
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(40, 60)]))
    list(session.propagate(PropagationRequest(direction="forward", max_frames=5)))
    masks = list(session.masks.frames())
    first.shutdown()
    assert masks and not (tmp_path / sid / "masks.sqlite").exists()

    second = SessionEngine(settings, predictor=predictor)
    try:
        reopened = second.open_session(sid)
        assert list(reopened.masks.frames()) == masks
        assert reopened.masks.last_propagation_id() == 1
        second.delete_session(sid)
    finally:
        second.close()
    with psycopg.connect(postgres_url) as conn:
        [(rows,)] = conn.execute("SELECT COUNT(*) FROM masks WHERE session = %s", (sid,))
    assert rows == 0

"""Bounded memory: with no retention budget SAM 2 state stays flat over a long propagation,
decoded frames stay within their buffer, and a click on a frame whose outputs were dropped
starts from that frame's stored mask and says it is not stock SAM 2's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.engine import SessionEngine
from deployments.engine import state as sam_state
from deployments.engine.mask_store import decode_mask
from deployments.protocol import Prompt, PropagationRequest
from tests.conftest import engine_settings
from tests.videos import write_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", num_frames=201, size=(96, 72))


@pytest.fixture
def lean_engine(tmp_path, predictor):
    """An engine whose sessions keep only the protected window (``retention_mb=0``)."""
    engine = SessionEngine(engine_settings(tmp_path, retention_mb=0), predictor=predictor)
    yield engine
    engine.close()


def test_state_after_200_frames_is_at_most_1_2x_the_state_after_40(lean_engine, long_video):
    engine = lean_engine
    session = engine.session(engine.create_session(long_video).session_id)
    session.add_prompt(Prompt(frame_index=0, points=[(20, 36)]))
    sizes = {}
    for _ in session.propagate(PropagationRequest(direction="forward")):
        done = session.info().propagation
        if done and done.done_frames in (40, 200):
            sizes[done.done_frames] = session.state_nbytes()
    print(f"state bytes after 40 frames {sizes[40]}, after 200 {sizes[200]}")
    assert sizes[200] <= 1.2 * sizes[40], sizes
    held = session._state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    window = sam_state.memory_window(engine.predictor)
    assert len(held) <= 2 * window + 2
    assert len(list(session.masks.frames())) == 201


def test_click_on_a_dropped_frame_starts_from_its_stored_mask(lean_engine, long_video, monkeypatch):
    engine = lean_engine
    session = engine.session(engine.create_session(long_video).session_id)
    session.add_prompt(Prompt(frame_index=0, points=[(20, 36)]))
    list(session.propagate(PropagationRequest(direction="forward", max_frames=80)))
    assert sam_state.frame_output(session._state, 1, 50) is None  # dropped from SAM 2's state
    stored = decode_mask(session.masks.frame(50)[0].rle)

    seen = []
    original = engine.predictor._run_single_frame_inference

    def observe(*args, **kwargs):
        seen.append(kwargs.get("prev_sam_mask_logits"))
        return original(*args, **kwargs)

    monkeypatch.setattr(engine.predictor, "_run_single_frame_inference", observe)
    result = session.add_prompt(Prompt(frame_index=50, obj_id=1, points=[(60, 36)], labels=[0]))
    assert result.exact is False
    [logits] = seen
    assert logits is not None
    size = engine.predictor.image_size // 4
    expected = F.interpolate(torch.from_numpy(stored)[None, None].float(), size=(size, size)) > 0.5
    agreement = ((logits > 0) == expected).float().mean().item()
    assert agreement > 0.95


def test_decoded_frames_stay_within_the_buffer(tmp_path, predictor, long_video):
    engine = SessionEngine(engine_settings(tmp_path, frame_buffer_mb=1), predictor=predictor)
    try:
        session = engine.session(engine.create_session(long_video).session_id)
        frames = session.frames
        size = engine.predictor.image_size
        bound = 1.25 * 2**20 + 4 * 3 * size * size * 4  # both readers, prefetched tensors
        walk = [*range(201), *range(200, -1, -1), *range(0, 201, 7)]
        for previous, k in zip([None, *walk], walk, strict=False):
            sign = 1 if previous is None or k >= previous else -1
            frames.prefetch(k + sign)
            assert np.isfinite(frames[k].numpy()).all()
            frames.read_rgb(200 - k)
            assert frames.buffer_nbytes() <= bound
    finally:
        engine.close()


def test_a_prefetched_frame_is_converted_once(engine, long_video, monkeypatch):
    frames = engine.session(engine.create_session(long_video).session_id).frames
    converted: list[int] = []
    original = frames._convert
    monkeypatch.setattr(frames, "_convert", lambda i: converted.append(i) or original(i))
    frames.prefetch(7)
    first = frames[7]
    assert converted == [7]
    assert torch.equal(frames[7], first)  # handed over once, then read again


def test_frame_space_reads_leave_the_models_reader_alone(engine, long_video, monkeypatch):
    frames = engine.session(engine.create_session(long_video).session_id).frames
    model_reads: list[int] = []
    original = frames._model_frames.frame
    monkeypatch.setattr(
        frames._model_frames, "frame", lambda k: model_reads.append(k) or original(k)
    )
    for k in (150, 3, 90):
        frames.read_rgb(k)
    assert model_reads == []

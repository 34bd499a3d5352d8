"""Bounded memory: SAM 2 state stays flat over a long propagation, and a click on a frame whose
outputs were dropped still starts from that frame's stored mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.engine import state as sam_state
from deployments.engine.masks import decode_mask
from deployments.protocol import Prompt, PropagationRequest
from tests.videos import write_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", num_frames=201, size=(96, 72))


def test_state_after_200_frames_is_at_most_1_2x_the_state_after_40(engine, long_video):
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


def test_click_on_a_dropped_frame_starts_from_its_stored_mask(engine, long_video, monkeypatch):
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
    session.add_prompt(Prompt(frame_index=50, obj_id=1, points=[(60, 36)], labels=[0]))
    [logits] = seen
    assert logits is not None
    size = engine.predictor.image_size // 4
    expected = F.interpolate(torch.from_numpy(stored)[None, None].float(), size=(size, size)) > 0.5
    agreement = ((logits > 0) == expected).float().mean().item()
    assert agreement > 0.95


def test_frame_cache_is_bounded(engine, long_video):
    session = engine.session(engine.create_session(long_video).session_id)
    for i in range(0, 200, 7):
        session.frames[i]
    assert len(session.frames._cache) == engine.settings.frame_cache_size
    size = engine.predictor.image_size
    assert session.frames.cache_nbytes() == engine.settings.frame_cache_size * 3 * size * size * 4
    assert np.isfinite(session.frames[3].numpy()).all()


def test_prefetched_frame_is_decoded_once(engine, long_video, monkeypatch):
    session = engine.session(engine.create_session(long_video).session_id)
    frames = session.frames
    loads: list[int] = []
    original = frames._load
    monkeypatch.setattr(frames, "_load", lambda i: loads.append(i) or original(i))
    frames.prefetch(7)
    first, again = frames[7], frames[7]
    assert first is again and loads == [7]

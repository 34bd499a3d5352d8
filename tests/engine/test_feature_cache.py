"""Image features kept for clicks (``FeatureCache``) and encoded in batches across sessions
(``EncoderBatcher``): a click on a propagated frame skips the image encoder and computes the
same masks, the cache stays within its bytes, and sessions propagating at once get the masks
they get one at a time."""

from __future__ import annotations

import threading

import numpy as np
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from deployments.engine import EngineSession, SessionEngine
from deployments.engine.features import FeatureCache, FrameFeatures
from deployments.engine.mask_store import decode_mask
from deployments.protocol import FrameMasks, Prompt, PropagationRequest
from tests.conftest import engine_settings
from tests.videos import circle_at, write_video

REFINED = 8


def features(nbytes: int, exact: bool = True) -> FrameFeatures:
    """Features holding ``nbytes`` (float32), as the cache sees any frame's."""
    return FrameFeatures((torch.zeros(1, 1, 1, nbytes // 4),), (), exact)


def test_the_least_recently_used_frames_go_once_the_bytes_pass_the_budget():
    cache = FeatureCache(max_bytes=3 * 1024)
    for frame in range(3):
        cache.put(frame, features(1024))
    assert cache.get(0) is not None  # 0 is now the most recent
    cache.put(3, features(1024))
    assert cache.frames() == [2, 0, 3] and cache.nbytes == 3 * 1024
    cache.put(4, features(2048))
    assert cache.frames() == [3, 4] and cache.nbytes == 3 * 1024
    assert cache.get(1) is None and (cache.hits, cache.misses) == (1, 1)


def test_a_zero_budget_keeps_the_last_frame_as_sam2_does():
    cache = FeatureCache(max_bytes=0)
    cache.put(5, features(1024))
    cache.put(6, features(1024))
    assert cache.frames() == [6]


def test_batched_features_serve_propagation_steps_only():
    cache = FeatureCache(max_bytes=2**20)
    cache.put(7, features(1024, exact=False))
    assert cache.get(7) is None  # a prompt re-encodes the frame exactly
    with cache.propagation_step():
        assert cache.get(7) is not None


def test_cached_features_are_those_sam2_computes(engine, video):
    """The cache's path hands SAM 2 the tensors its own ``_get_image_feature`` computes."""
    session = engine.session(engine.create_session(video).session_id)
    predictor, state = engine.predictor, session._state
    plain = {**state, "feature_cache": None, "cached_features": {}}

    def both() -> list[tuple]:
        return [
            SAM2VideoPredictor._get_image_feature(predictor, plain, 3, 2),
            predictor._get_image_feature(state, 3, 2),  # a miss: encoded and cached
            predictor._get_image_feature(state, 3, 2),  # a hit
        ]

    sam2, *ours = engine.executor.run("test", both)
    assert session.feature_cache.frames() == [3] and session.feature_cache.hits == 1
    for features_ in ours:
        for expected, got in zip(_tensors(sam2[1:]), _tensors(features_[1:]), strict=True):
            assert torch.equal(expected, got)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def propagate_then_refine(session: EngineSession) -> list:
    """A click and a forward propagation, then a correction on a propagated frame; its masks."""
    x, y = circle_at(0, 24, (160, 120))
    session.add_prompt(Prompt(frame_index=0, points=[(x, y)]))
    list(session.propagate(PropagationRequest(direction="forward")))
    refined = session.add_prompt(
        Prompt(frame_index=REFINED, obj_id=1, points=[(150, 110)], labels=[0])
    )
    return refined.masks


def test_a_click_on_a_propagated_frame_skips_the_encoder_and_gives_the_same_masks(
    tmp_path, predictor, video, monkeypatch
):
    encoded: list[int] = []
    forward_image = predictor.forward_image

    def counted(batch: torch.Tensor) -> dict:
        encoded.append(len(batch))
        return forward_image(batch)

    monkeypatch.setattr(predictor, "forward_image", counted)
    results = {}
    for name, budget_mb in (("cached", 256), ("one frame", 0)):
        settings = engine_settings(tmp_path / name, feature_cache_mb=budget_mb)
        engine = SessionEngine(settings, predictor=predictor)
        try:
            session = engine.session(engine.create_session(video).session_id)
            refined = propagate_then_refine(session)
            engine.executor.run(session.id, lambda: None)  # after the work queued behind it
            hits, encoded_before = session.feature_cache.hits, len(encoded)
            session.add_prompt(Prompt(frame_index=REFINED + 4, obj_id=1, points=[(30, 30)]))
            engine.executor.run(session.id, lambda: None)
            second = session.masks.frame(REFINED + 4)
            results[name] = (refined, second, session.feature_cache.hits - hits)
            results[name] += (len(encoded) - encoded_before,)
        finally:
            engine.close()
    cached, one_frame = results["cached"], results["one frame"]
    # The click and, behind it, its memory: both read the frame's features, no encoder run.
    assert cached[2:] == (2, 0)
    assert one_frame[2:] == (1, 1)  # SAM 2's one frame: the click's frame is encoded again
    assert cached[:2] == one_frame[:2]
    assert any(mask.area for mask in cached[0])


def test_a_clicks_memory_is_encoded_behind_it_and_the_prompt_stays_unsettled(engine, video):
    session = engine.session(engine.create_session(video).session_id)
    session.add_prompt(Prompt(frame_index=3, points=[(40, 60)]))
    engine.executor.run(session.id, lambda: None)  # after the work queued behind the click
    pending = session._state["temp_output_dict_per_obj"][0]["cond_frame_outputs"]
    assert list(pending) == [3] and pending[3]["maskmem_features"] is not None
    assert not session._state["output_dict_per_obj"][0]["cond_frame_outputs"]


def test_sessions_propagating_at_once_share_encoder_batches_and_keep_their_masks(
    tmp_path, predictor
):
    video = write_video(tmp_path / "clip.mp4", num_frames=12)
    clicks = [(40, 60), (120, 40), (60, 90)]
    batched = run_sessions(tmp_path / "batched", predictor, video, clicks, max_encoder_batch=3)
    serial = run_sessions(tmp_path / "serial", predictor, video, clicks, max_encoder_batch=1)
    assert batched["batches"] > 0
    for got, expected in zip(batched["masks"], serial["masks"], strict=True):
        assert got.keys() == expected.keys() == set(range(12))
        for frame, masks in expected.items():
            for mask, other in zip(masks, got[frame], strict=True):
                assert mask.obj_id == other.obj_id
                assert mask.rle == other.rle or iou(mask.rle, other.rle) >= 0.999, frame


def run_sessions(root, predictor, video, clicks, *, max_encoder_batch: int) -> dict:
    """One session per click, each prompted then propagated forward: all at once when
    batching, one after the other when not. Each session's masks by frame."""
    settings = engine_settings(root, max_sessions=3, max_encoder_batch=max_encoder_batch)
    engine = SessionEngine(settings, predictor=predictor)
    try:
        sessions = [engine.session(engine.create_session(video).session_id) for _ in clicks]
        for session, point in zip(sessions, clicks, strict=True):
            session.add_prompt(Prompt(frame_index=0, points=[point]))
        masks: list[dict[int, list]] = [{} for _ in sessions]

        def propagate(i: int) -> None:
            for event in sessions[i].propagate(PropagationRequest(direction="forward")):
                if isinstance(event, FrameMasks):
                    masks[i][event.frame_index] = event.masks

        if max_encoder_batch > 1:
            threads = [threading.Thread(target=propagate, args=(i,)) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for i in range(3):
                propagate(i)
        batcher = engine.executor.batcher
        return {"masks": masks, "batches": batcher.batches if batcher else 0}
    finally:
        engine.close()


def iou(a, b) -> float:
    x, y = decode_mask(a), decode_mask(b)
    union = np.logical_or(x, y).sum()
    return 1.0 if union == 0 else float(np.logical_and(x, y).sum() / union)

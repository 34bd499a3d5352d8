"""One SAM 2 walk of a propagation: stock ``propagate_in_video`` over an object view, stepped
one frame per executor item, each step telling whether it read what stock SAM 2 reads and
moving the retention window along. A pass is one walk; re-detection (``propagation``) closes
a walk and opens another from the frame where it added objects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import deployments.engine.state as sam_state
from deployments.engine.features import FeatureCache, FrameToEncode, UpcomingFrame
from deployments.engine.frames import FrameSource
from deployments.engine.ledger import is_exact, mark_inexact
from deployments.engine.prompting import Applied
from deployments.engine.retention import RetentionWindow

# (frame index, propagated objects, bool masks [N, H, W], their scores, all exact)
StepResult = tuple[int, list[int], np.ndarray, list[float], bool]


@dataclass
class Walk:
    """SAM 2's generator, its frames in SAM 2's order, one step of it (model thread; None
    once it is done) and the frame that step will encode, for the ``EncoderBatcher``."""

    steps: Iterator
    frames: range
    step: Callable[[], StepResult | None]
    upcoming: UpcomingFrame


def open_walk(
    predictor: Any,
    state: sam_state.State,
    obj_ids: list[int],
    start: int,
    max_frames: int,
    reverse: bool,
    *,
    frames: FrameSource,
    features: FeatureCache,
    retention: RetentionWindow,
    anchors: list[int],
) -> Walk:
    """SAM 2's walk over ``obj_ids`` from ``start`` (not begun: its first step runs SAM 2's
    preflight). Each step moves ``anchors[-1]`` (the pass's end, which the retention window
    protects) to the frame it computed."""
    view = sam_state.object_view(state, obj_ids)
    steps = predictor.propagate_in_video(
        view, start_frame_idx=start, max_frame_num_to_track=max_frames, reverse=reverse
    )
    # SAM 2's processing order (propagate_in_video); backward from frame 0 walks nothing.
    if reverse:
        walk = range(start, max(start - max_frames, 0) - 1, -1) if start > 0 else range(0)
    else:
        walk = range(start, min(start + max_frames, len(frames) - 1) + 1)
    sign = -1 if reverse else 1
    next_frame = walk[0] if walk else -1

    def step() -> StepResult | None:
        nonlocal next_frame
        try:
            with features.propagation_step():
                frame, ids, video_res_masks = next(steps)
        except StopIteration:
            return None
        next_frame = frame + sign
        # The next frame is usually prefetched already; start the one after it now.
        frames.prefetch(frame + sign)
        frames.prefetch(frame + 2 * sign)
        exact = all([_tracked_exactly(view, i, frame) for i in range(len(ids))])
        anchors[-1] = frame
        retention.enforce(state, anchors)
        scores = [
            torch.sigmoid(
                sam_state.frame_output(state, o, frame)["object_score_logits"].float()
            ).item()
            for o in ids
        ]
        masks = (video_res_masks[:, 0] > 0).cpu().numpy()
        return frame, list(ids), masks, scores, exact

    def upcoming() -> FrameToEncode | None:
        """None past the walk's end, and where every object has a prompt (SAM 2 reuses the
        prompt's output there and encodes nothing)."""
        frame = next_frame
        outputs = view["output_dict_per_obj"].values()
        if frame not in walk or all(frame in o["cond_frame_outputs"] for o in outputs):
            return None
        return FrameToEncode(features, frame, lambda: frames[frame])

    return Walk(steps, walk, step, upcoming)


def with_applied(result: StepResult, applied: list[Applied]) -> StepResult:
    """A frame's result with objects just prompted there added (their prompts' masks)."""
    frame, obj_ids, masks, scores, exact = result
    return (
        frame,
        obj_ids + [a.obj_id for a in applied],
        np.concatenate([masks, np.stack([a.mask for a in applied])]),
        scores + [a.score for a in applied],
        exact and all(a.exact for a in applied),
    )


def _tracked_exactly(view: sam_state.State, obj_idx: int, frame: int) -> bool:
    """Whether the object's output on a frame SAM 2 just tracked is stock SAM 2's: a prompted
    frame's is the prompt's; another's was computed from memory, which must have been read
    exactly (its output is marked otherwise)."""
    outputs = view["output_dict_per_obj"][obj_idx]
    if frame in outputs["cond_frame_outputs"]:
        return is_exact(outputs["cond_frame_outputs"][frame])
    exact = sam_state.read_exact(view, obj_idx, read_memory=True)
    if not exact:
        mark_inexact(dict.get(outputs["non_cond_frame_outputs"], frame))
    return exact

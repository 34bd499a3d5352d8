"""Prompts and clears applied to SAM 2's state through stock SAM 2's own methods (model
thread), each with whether it read exactly what stock SAM 2 reads.

Nothing here consolidates, trims or reseeds behind SAM 2's back: a click on a tracked frame is
SAM 2's correction (its memories, the frame's own mask logits), a clear downgrades as SAM 2
does. Where the retention window dropped an output SAM 2 would read, the operation runs
without it, and a click on a frame whose own output was dropped starts from the stored mask
(the one the user sees) as its previous logits: the documented approximation, reported as
``exact=False`` and marked on the output, so whatever later reads it is inexact too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sam2.sam2_video_predictor import SAM2VideoPredictor

import deployments.engine.state as sam_state
from deployments.engine.ledger import is_exact, mark_inexact
from deployments.engine.mask_store import decode_mask
from deployments.protocol.errors import InvalidPromptError
from deployments.protocol.types import Prompt

# Logit magnitude given to a stored mask that stands in for a dropped output's logits (SAM 2
# clamps previous logits to +/-32; its own confident masks sit around +/-10..20).
SEED_LOGIT = 10.0
StoredMask = Callable[[int, int], "np.ndarray | None"]  # (obj_id, frame) -> mask


@dataclass(frozen=True)
class PromptInputs:
    """A prompt as SAM 2 takes it: points with labels and a box in frame pixels, or in 0..1 of
    the frame where ``normalized`` (handed to SAM 2 as they are, so no rounding comes between),
    a mask as a bool array."""

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    mask: np.ndarray | None
    clear_old_points: bool
    normalized: bool


@dataclass(frozen=True)
class Applied:
    """An object's mask on a frame after an operation, its score, and whether it is stock
    SAM 2's. ``mask`` None: SAM 2 holds no output of the object there any more."""

    obj_id: int
    mask: np.ndarray | None
    score: float
    exact: bool


def prompt_inputs(prompt: Prompt, width: int, height: int) -> PromptInputs:
    """A prompt's inputs for SAM 2; InvalidPromptError for points or box corners outside the
    ``width`` x ``height`` frame, or a mask not of its size."""
    scale = np.array([width, height], np.float32) if prompt.normalized else np.ones(2, np.float32)
    points = labels = box = mask = None
    if prompt.points:
        points = np.asarray(prompt.points, dtype=np.float32)
        _check_inside(points * scale, "point", width, height)
        labels = np.asarray(prompt.labels or [1] * len(points), dtype=np.int32)
    if prompt.box is not None:
        box = np.asarray(prompt.box, dtype=np.float32).reshape(2, 2)
        _check_inside(box * scale, "box corner", width, height)
    if prompt.mask is not None:
        if tuple(prompt.mask.size) != (height, width):
            raise InvalidPromptError(
                f"mask size {list(prompt.mask.size)} differs from the frame size "
                f"[{height}, {width}]"
            )
        try:
            mask = decode_mask(prompt.mask)
        except (ValueError, TypeError, UnicodeError) as exc:
            raise InvalidPromptError(f"mask is not a valid COCO RLE: {exc}") from exc
    return PromptInputs(points, labels, box, mask, prompt.clear_old_points, prompt.normalized)


def _check_inside(xy: np.ndarray, what: str, width: int, height: int) -> None:
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if outside.any():
        x, y = xy[int(np.argmax(outside))]
        raise InvalidPromptError(
            f"{what} ({x:g}, {y:g}) lies outside the {width}x{height} frame",
            width=width,
            height=height,
        )


def apply_prompt(
    predictor: SAM2VideoPredictor,
    state: sam_state.State,
    frame: int,
    obj_id: int,
    inputs: PromptInputs,
    stored_mask: StoredMask,
) -> Applied:
    """A prompt as SAM 2 applies it: the mask first, then points or box on top."""
    sam_state.forget_lookups(state)
    idx = predictor._obj_id_to_idx(state, obj_id)  # adds a new object
    sam_state.adopt(state, idx)
    exact, result = True, None
    if inputs.mask is not None:
        # SAM 2.1 takes a mask prompt as the output (use_mask_input_as_output_without_sam):
        # it reads no memory, tracked frame or not.
        read_memory = (
            frame in state["frames_tracked_per_obj"][idx]
            and not predictor.use_mask_input_as_output_without_sam
        )
        result = predictor.add_new_mask(state, frame, obj_id, torch.from_numpy(inputs.mask))
        exact = _tag(state, idx, frame, sam_state.read_exact(state, idx, read_memory))
    if inputs.points is not None or inputs.box is not None:
        exact = _untrack_if_orphaned(state, idx, frame) and exact
        read_memory = frame in state["frames_tracked_per_obj"][idx]
        is_cond = not read_memory or predictor.add_all_frames_to_correct_as_cond
        previous = sam_state.previous_prompt_output(state, idx, frame, is_cond)
        # Stock SAM 2 would start from the frame's non-conditioning output, which was dropped.
        dropped = sam_state.non_cond_outputs(state, idx).dropped
        own_dropped = previous is None and bool(dropped[frame])
        seed = stored_mask(obj_id, frame) if own_dropped else None
        with _seeded(predictor, state, idx, frame, is_cond, seed):
            result = predictor.add_new_points_or_box(
                state,
                frame,
                obj_id,
                points=inputs.points,
                labels=inputs.labels,
                clear_old_points=inputs.clear_old_points or inputs.box is not None,
                normalize_coords=not inputs.normalized,
                box=None if inputs.box is None else inputs.box.reshape(-1),
            )
        read = sam_state.read_exact(state, idx, read_memory)
        exact = _tag(state, idx, frame, exact and is_exact(previous) and read and not own_dropped)
    assert result is not None, "a prompt has a mask, points or a box"
    _, obj_ids, video_res_masks = result
    out = sam_state.frame_output(state, obj_id, frame)
    score = torch.sigmoid(out["object_score_logits"].float()).item()
    mask = (video_res_masks[obj_ids.index(obj_id), 0] > 0).cpu().numpy()
    return Applied(obj_id, mask, score, exact)


def clear_prompts(
    predictor: SAM2VideoPredictor, state: sam_state.State, frame: int, obj_id: int | None
) -> list[Applied]:
    """Remove the prompts of one object (None: of every object) on a frame, as SAM 2 does:
    an output a propagation had consolidated is downgraded to a non-conditioning one, and is
    the frame's mask from then on; a prompt never consolidated leaves whatever SAM 2 held
    there before it (a propagated output, or nothing). One ``Applied`` per object that had
    prompts there."""
    sam_state.forget_lookups(state)
    candidates = state["obj_ids"] if obj_id is None else [obj_id]
    targets = [o for o in candidates if frame in sam_state.prompt_frames(state, o)]
    cleared = []
    for target in targets:
        _, obj_ids, video_res_masks = predictor.clear_all_prompts_in_frame(
            state, frame, target, need_output=True
        )
        idx = state["obj_id_to_idx"][target]
        exact = sam_state.read_exact(state, idx, read_memory=False)
        out = sam_state.frame_output(state, target, frame)
        if out is None:
            cleared.append(Applied(target, None, 0.0, exact))
            continue
        score = torch.sigmoid(out["object_score_logits"].float()).item()
        mask = (video_res_masks[obj_ids.index(target), 0] > 0).cpu().numpy()
        cleared.append(Applied(target, mask, score, exact))
    return cleared


def mark_all_inexact(state: sam_state.State) -> None:
    """Mark every prompt output inexact (a state rebuilt without its checkpoint)."""
    for per_obj in (state["output_dict_per_obj"], state["temp_output_dict_per_obj"]):
        for outputs in per_obj.values():
            for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for out in outputs[key].values():
                    mark_inexact(out)


def _untrack_if_orphaned(state: sam_state.State, idx: int, frame: int) -> bool:
    """Stock SAM 2 fails (an assertion) on a click on a tracked frame of an object left with
    no conditioning frame (its prompts were cleared after a propagation); here that click
    starts the object afresh, as a first click, and is inexact. True otherwise."""
    tracked = state["frames_tracked_per_obj"][idx]
    if frame in tracked and not state["output_dict_per_obj"][idx]["cond_frame_outputs"]:
        del tracked[frame]
        return False
    return True


def _tag(state: sam_state.State, idx: int, frame: int, exact: bool) -> bool:
    """Mark the prompt output just computed if it is inexact; returns ``exact``."""
    if not exact:
        temp = state["temp_output_dict_per_obj"][idx]
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            if (out := temp[key].get(frame)) is not None:
                mark_inexact(out)
    return exact


@contextlib.contextmanager
def _seeded(
    predictor: SAM2VideoPredictor,
    state: sam_state.State,
    idx: int,
    frame: int,
    is_cond: bool,
    seed: np.ndarray | None,
) -> Iterator[None]:
    """Hand SAM 2 ``seed`` as the object's previous mask logits on ``frame``."""
    if seed is None:
        yield
        return
    key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
    temp = state["temp_output_dict_per_obj"][idx][key]
    temp[frame] = {"pred_masks": _mask_logits(predictor, state, seed)}
    try:
        yield
    except BaseException:
        temp.pop(frame, None)
        raise


def _mask_logits(
    predictor: SAM2VideoPredictor, state: sam_state.State, mask: np.ndarray
) -> torch.Tensor:
    """A frame-space bool mask as SAM 2 low-res mask logits [1, 1, S/4, S/4]."""
    size = predictor.image_size // 4
    prob = F.interpolate(
        torch.from_numpy(mask)[None, None].float(),
        size=(size, size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return ((prob * 2 - 1) * SEED_LOGIT).to(state["storage_device"])

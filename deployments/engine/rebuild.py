"""Rebuilding a session's SAM 2 state on another replica (model thread): the checkpoint's prompt
state, the prompt-log entries after it applied as live operations, a propagation that was under
way when the replica died accounted for. See docs/architecture.md, Fidelity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from sam2.sam2_video_predictor import SAM2VideoPredictor

import deployments.engine.prompting as prompting
import deployments.engine.state as sam_state
from deployments.engine.checkpoint import StateCheckpoint
from deployments.engine.mask_store import MaskStore, decode_mask
from deployments.protocol.errors import InvalidRequestError
from deployments.protocol.types import Prompt

InputsOf = Callable[[Prompt], prompting.PromptInputs]


def rebuild_state(
    predictor: SAM2VideoPredictor,
    state: sam_state.State,
    checkpoint: StateCheckpoint,
    masks: MaskStore,
    entries: list[dict[str, Any]],
    inputs_of: InputsOf,
) -> int:
    """Fill a fresh state from the checkpoint and apply the log ``entries`` (sorted by ``seq``)
    after it; the last sequence number applied. Without a checkpoint (a log written before
    checkpoints existed) every entry is replayed and every output marked inexact."""
    seq, legacy = 0, not checkpoint.exists()
    if not legacy:
        seq, running = checkpoint.load(predictor, state)
        if running is not None:
            _mark_interrupted(state, masks, running)
    for entry in entries:
        if legacy or entry.get("seq", 0) > seq:
            _replay(predictor, state, masks, entry, inputs_of)
            seq = entry.get("seq", seq)
    if legacy and entries:
        prompting.mark_all_inexact(state)
    return seq


def remove_object(predictor: SAM2VideoPredictor, state: sam_state.State, obj_id: int) -> None:
    if obj_id in state["obj_id_to_idx"]:
        predictor.remove_object(state, obj_id, need_output=False)


def stored_mask_of(masks: MaskStore) -> prompting.StoredMask:
    """The object's stored mask on a frame, the one the user sees (None: none)."""

    def stored_mask(obj_id: int, frame: int) -> np.ndarray | None:
        stored = next((m.rle for m in masks.frame(frame) if m.obj_id == obj_id), None)
        return None if stored is None else decode_mask(stored)

    return stored_mask


def _replay(
    predictor: SAM2VideoPredictor,
    state: sam_state.State,
    masks: MaskStore,
    entry: dict[str, Any],
    inputs_of: InputsOf,
) -> None:
    """One prompt-log entry applied to SAM 2's state only. An entry written before checkpoints
    existed says how its frame had been tracked: SAM 2 is shown that. A text prompt's entry
    holds the mask prompts it applied: replayed without the detector."""
    op = entry["op"]
    if op == "prompt":
        _replay_prompt(
            predictor, state, masks, entry["prompt"], entry.get("tracked", "unknown"), inputs_of
        )
    elif op == "text_prompt":
        for added in entry["objects"]:
            _replay_prompt(predictor, state, masks, added["prompt"], "unknown", inputs_of)
    elif op == "clear":
        prompting.clear_prompts(predictor, state, entry["frame_index"], entry["obj_id"])
    elif op == "remove_object":
        remove_object(predictor, state, entry["obj_id"])
    elif op == "reset":
        predictor.reset_state(state)
    else:
        raise InvalidRequestError(f"unknown prompt-log entry {op!r}")


def _replay_prompt(
    predictor: SAM2VideoPredictor,
    state: sam_state.State,
    masks: MaskStore,
    logged: dict[str, Any],
    tracked: sam_state.Tracked | Literal["unknown"],
    inputs_of: InputsOf,
) -> None:
    """A logged prompt applied as it was live; ``tracked`` (a legacy entry's) is shown to
    SAM 2 first, unless ``unknown``."""
    prompt = Prompt.model_validate(logged)
    idx = predictor._obj_id_to_idx(state, prompt.obj_id)
    sam_state.adopt(state, idx)
    if tracked != "unknown":
        sam_state.set_tracked(state, idx, prompt.frame_index, tracked)
    prompting.apply_prompt(
        predictor,
        state,
        prompt.frame_index,
        prompt.obj_id,
        inputs_of(prompt),
        stored_mask_of(masks),
    )


def _mark_interrupted(state: sam_state.State, masks: MaskStore, running: dict[str, Any]) -> None:
    """A propagation was under way when the checkpoint was written and the replica died: the
    frames it stored masks for were tracked, and stock SAM 2 would hold their outputs (dropped
    here, so what reads them is inexact)."""
    start = running["start"]
    for frame, obj_id in masks.propagated(running["propagation_id"]):
        idx = state["obj_id_to_idx"].get(obj_id)
        if idx is None or frame in sam_state.prompt_frames(state, obj_id):
            continue
        sam_state.set_tracked(state, idx, frame, "backward" if frame < start else "forward")
        sam_state.non_cond_outputs(state, idx).dropped[frame] = 1

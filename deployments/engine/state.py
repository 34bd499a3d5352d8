"""Operations on SAM 2's ``inference_state`` dict that the predictor does not offer: building
it over a lazy ``FrameSource``, giving new objects the serving containers (``ledger``),
restricting it to some objects, telling whether an operation read what stock SAM 2 reads, and
measuring it. The dict's layout is SAM2VideoPredictor's (sam2 1.1.0); the session changes it
only through SAM 2's own methods and this module."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from deployments.engine.features import FeatureCache
from deployments.engine.frames import FrameSource
from deployments.engine.ledger import NonCondOutputs, TrackedFrames, is_exact

State = dict[str, Any]
# How SAM 2 tracked an object onto a frame (``frames_tracked_per_obj``); None: never.
Tracked = Literal["forward", "backward"] | None
# The per-object containers of the state, keyed by SAM 2's object index.
_PER_OBJECT = (
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "output_dict_per_obj",
    "temp_output_dict_per_obj",
    "frames_tracked_per_obj",
)


def new_state(
    frames: FrameSource,
    height: int,
    width: int,
    device: torch.device,
    offload_state_to_cpu: bool,
    features: FeatureCache,
) -> State:
    """The dict ``SAM2VideoPredictor.init_state`` builds, with ``frames`` as its images and
    ``features`` as its image-feature cache (``ServingVideoPredictor`` reads it instead of
    SAM 2's one-frame ``cached_features``; views of the state share it).

    Skips init_state's frame loading (every frame as float32, sam2#196) and its warm-up
    encoding of frame 0, which the first click does anyway.
    """
    return {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "feature_cache": features,
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def object_view(state: State, obj_ids: list[int]) -> State:
    """A state that shows SAM 2 only ``obj_ids`` (SAM 2.1 tracks objects independently).

    The per-object containers are shared with ``state``, so whatever SAM 2 computes through
    the view lands in the full state. Used to propagate a subset of objects, and to leave out
    objects that have no prompt left.
    """
    view = dict(state)
    indices = [state["obj_id_to_idx"][obj_id] for obj_id in obj_ids]
    for key in _PER_OBJECT:
        view[key] = {new: state[key][old] for new, old in enumerate(indices)}
    view["obj_id_to_idx"] = OrderedDict((obj_id, i) for i, obj_id in enumerate(obj_ids))
    view["obj_idx_to_id"] = OrderedDict(enumerate(obj_ids))
    view["obj_ids"] = list(obj_ids)
    return view


def prompted_objects(state: State) -> list[int]:
    """Object ids that still have a point or mask prompt on some frame."""
    return [
        obj_id
        for obj_id, idx in state["obj_id_to_idx"].items()
        if state["point_inputs_per_obj"][idx] or state["mask_inputs_per_obj"][idx]
    ]


def prompt_frames(state: State, obj_id: int) -> list[int]:
    idx = state["obj_id_to_idx"].get(obj_id)
    if idx is None:
        return []
    return sorted({*state["point_inputs_per_obj"][idx], *state["mask_inputs_per_obj"][idx]})


def frame_output(state: State, obj_id: int, frame_index: int) -> dict | None:
    """SAM 2's latest output for an object on a frame, where it still holds one (looked up
    without counting as a read of SAM 2's)."""
    idx = state["obj_id_to_idx"].get(obj_id)
    if idx is None:
        return None
    for container in (state["temp_output_dict_per_obj"][idx], state["output_dict_per_obj"][idx]):
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            out = dict.get(container[key], frame_index)
            if out is not None:
                return out
    return None


def adopt(state: State, obj_idx: int) -> None:
    """Give an object slot SAM 2 just made the serving containers (``ledger``), once."""
    outputs = state["output_dict_per_obj"][obj_idx]
    if not isinstance(outputs["non_cond_frame_outputs"], NonCondOutputs):
        num_frames = state["num_frames"]
        assert not outputs["non_cond_frame_outputs"], "adopt a new slot only"
        outputs["non_cond_frame_outputs"] = NonCondOutputs(num_frames)
        state["frames_tracked_per_obj"][obj_idx] = TrackedFrames(num_frames)


def non_cond_outputs(state: State, obj_idx: int) -> NonCondOutputs:
    return state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]


def forget_lookups(state: State) -> None:
    """Start an operation: nothing looked up yet."""
    for outputs in state["output_dict_per_obj"].values():
        outputs["non_cond_frame_outputs"].looked_up.clear()


def read_exact(state: State, obj_idx: int, read_memory: bool) -> bool:
    """Whether what SAM 2 just read for the object equals what stock SAM 2 reads: every
    non-conditioning output it looked up (not dropped, exact) and, when it attended to memory,
    every conditioning output (sam2.1 attends to all of them: ``max_cond_frames_in_attn``
    is -1)."""
    exact = non_cond_outputs(state, obj_idx).lookups_exact()
    if read_memory:
        cond = state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"].values()
        exact = exact and all(is_exact(out) for out in cond)
    return exact


def previous_prompt_output(
    state: State, obj_idx: int, frame_index: int, is_cond: bool
) -> dict | None:
    """The prompt output whose mask logits SAM 2 feeds a click on ``frame_index``, where
    there is one (``add_new_points_or_box`` looks there before the non-conditioning one)."""
    key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
    temp = state["temp_output_dict_per_obj"][obj_idx][key].get(frame_index)
    if temp is not None:
        return temp
    return state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"].get(frame_index)


def tracked(state: State, obj_id: int, frame_index: int) -> Tracked:
    """Whether and which way a propagation reached the object on the frame. SAM 2 reads it
    when a prompt lands there: an untracked frame is an initial conditioning frame (no
    memory), a tracked one is corrected with the memories, in that direction."""
    idx = state["obj_id_to_idx"].get(obj_id)
    seen = None if idx is None else state["frames_tracked_per_obj"][idx].get(frame_index)
    if seen is None:
        return None
    return "backward" if seen["reverse"] else "forward"


def set_tracked(state: State, obj_idx: int, frame_index: int, how: Tracked) -> None:
    """Make SAM 2 see the frame as ``tracked`` would report it."""
    frames = state["frames_tracked_per_obj"][obj_idx]
    if how is None:
        frames.pop(frame_index, None)
    else:
        frames[frame_index] = {"reverse": how == "backward"}


def encode_pending_memories(predictor: SAM2VideoPredictor, state: State) -> None:
    """Run the memory encoder now on the prompt outputs SAM 2's next preflight consolidates,
    and leave them where they are: the preflight then only moves them (it encodes an
    output only while its memory is missing), with the same memories it would have computed.

    Run on the model thread right after a prompt, while the annotator looks at the mask, so
    the next click does not pay for consolidating this one. SAM 2's preflight does the work,
    on a view whose containers are copies: the outputs it encodes are the state's own, but
    the state's layout stays as it was (a clear still finds the prompt unsettled).
    """
    temp = state["temp_output_dict_per_obj"]
    pending = [o for o, i in state["obj_id_to_idx"].items() if any(temp[i].values())]
    if not pending:
        return
    scratch = object_view(state, pending)
    scratch["temp_output_dict_per_obj"] = {
        i: {key: dict(outputs) for key, outputs in per_obj.items()}
        for i, per_obj in scratch["temp_output_dict_per_obj"].items()
    }
    scratch["output_dict_per_obj"] = {
        i: {"cond_frame_outputs": dict(per_obj["cond_frame_outputs"]), "non_cond_frame_outputs": {}}
        for i, per_obj in scratch["output_dict_per_obj"].items()
    }
    predictor.propagate_in_video_preflight(scratch)


def memory_window(model: torch.nn.Module) -> int:
    """How many frames back SAM 2 looks when tracking: its mask memories
    (``num_maskmem`` at the eval stride) and its object pointers."""
    stride = model.memory_temporal_stride_for_eval
    return max(model.num_maskmem * stride, model.max_obj_ptrs_in_encoder)


def nbytes(state: State) -> int:
    """Bytes of the tensors the state holds (each storage once) plus its decoded frames."""
    seen: set[int] = set()
    total = 0
    stack: list[Any] = [v for k, v in state.items() if k != "images"]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total + state["images"].buffer_nbytes()

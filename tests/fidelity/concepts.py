"""Stock SAM 2 as the oracle of concept-created objects: a text prompt is the mask prompts it
applied, and a re-detecting propagation is stock's "propagate to the frame, add the masks
there, propagate from the frame" (``deployments.engine.propagation``). The mask prompts are
read from the session's prompt log, so the oracle is also driven by what a rebuild replays.

Each helper runs the engine's operation on ``Differential.session`` and the stock calls on its
oracle, recording one ``Step`` per stock operation (a mask prompt, a walk), so
``Differential.report`` names a repro.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deployments.engine.concepts import Detect
from deployments.engine.mask_store import decode_mask
from deployments.protocol import FrameMasks, Prompt, PropagationDone, PropagationRequest
from deployments.protocol.concepts import (
    DetectedInstance,
    ObjectAdded,
    TextPrompt,
    TextPromptResult,
)
from tests.fidelity.oracle import Differential, Masks, Step


def logged_prompts(log: list[dict[str, Any]], since: int) -> dict[int, list[Prompt]]:
    """The mask prompts the log's text-prompt entries after ``since`` applied, by frame."""
    prompts: dict[int, list[Prompt]] = {}
    for entry in log[since:]:
        if entry["op"] == "text_prompt":
            for added in entry["objects"]:
                prompt = Prompt.model_validate(added["prompt"])
                prompts.setdefault(prompt.frame_index, []).append(prompt)
    return prompts


def apply_text_prompt(
    diff: Differential,
    log: list[dict[str, Any]],
    prompt: TextPrompt,
    instances: list[DetectedInstance],
) -> TextPromptResult:
    """The engine's text prompt; stock given each new object's mask prompt, compared with the
    object's mask in the text prompt's answer."""
    since = len(log)
    result = diff.session.add_text_prompt(prompt, instances)
    got = _decoded(result.masks)
    for mask_prompt in logged_prompts(log, since).get(prompt.frame_index, []):
        step = _step(diff, mask_prompt)
        step.exact = result.exact
        expected = diff.oracle.prompt(mask_prompt, mask_prompt.obj_id)
        obj_id = mask_prompt.obj_id
        diff._compare(step, prompt.frame_index, obj_id, got, expected[obj_id], result.exact)
    return result


def apply_redetecting_propagation(
    diff: Differential,
    log: list[dict[str, Any]],
    request: PropagationRequest,
    detect: Detect,
) -> list[FrameMasks | ObjectAdded | PropagationDone]:
    """The engine's propagation with ``request.redetect`` (one direction); stock walks from the
    start, and wherever the engine added objects: to that frame, the logged mask prompts
    there, then from that frame on (on the walk's last frame, the prompts' masks). Every
    frame the engine reports is compared with stock's last walk over it."""
    assert request.direction != "both" and request.start_frame_index is not None
    since = len(log)
    running = diff.session.propagate(request, detect)
    try:
        events = list(running)
    finally:
        running.close()
    added = logged_prompts(log, since)
    reverse = request.direction == "backward"
    sign = -1 if reverse else 1
    start = request.start_frame_index
    last = start + sign * (request.max_frames or diff.session.video.num_frames)
    last = min(max(last, 0), diff.session.video.num_frames - 1)
    expected: dict[int, Masks] = {}
    for frame in sorted(added, reverse=reverse):
        expected |= _walk(diff, start, frame, reverse)
        for mask_prompt in added[frame]:
            _step(diff, mask_prompt)
            masks = diff.oracle.prompt(mask_prompt, mask_prompt.obj_id)
            expected[frame][mask_prompt.obj_id] = masks[mask_prompt.obj_id]
        start = frame
    if not added or start != last:  # on the walk's last frame, the prompts' masks
        expected |= _walk(diff, start, last, reverse)
    step = _step(diff, request)
    done = events[-1]
    assert isinstance(done, PropagationDone)
    step.exact = done.exact
    frames = [e for e in events if isinstance(e, FrameMasks)]
    if [e.frame_index for e in frames] != list(range(request.start_frame_index, last + sign, sign)):
        step.problems.append(f"frames reported {[e.frame_index for e in frames]}")
    for event in frames:
        got = _decoded(event.masks)
        for obj_id, mask in expected[event.frame_index].items():
            diff._compare(step, event.frame_index, obj_id, got, mask, done.exact)
    return events


def _walk(diff: Differential, start: int, end: int, reverse: bool) -> dict[int, Masks]:
    """Stock's ``propagate_in_video`` of every object from ``start`` to ``end``, run to its end."""
    walk = diff.oracle.model.propagate_in_video(
        diff.oracle.state,
        start_frame_idx=start,
        max_frame_num_to_track=abs(end - start),
        reverse=reverse,
    )
    return {
        frame: {o: (masks[i, 0] > 0).cpu().numpy() for i, o in enumerate(ids)}
        for frame, ids, masks in walk
    }


def _step(diff: Differential, op: Prompt | PropagationRequest) -> Step:
    step = Step(len(diff.steps), op)
    diff.steps.append(step)
    return step


def _decoded(masks: list[Any]) -> dict[int, np.ndarray]:
    return {m.obj_id: decode_mask(m.rle) for m in masks}

"""Propagation on a session: the plan (objects, start, passes), the running ``Propagation`` and
its model work, pipelined by one frame, through stock SAM 2's ``propagate_in_video``.

``SessionPropagation`` is the propagating half of ``EngineSession`` (session.py), which it is mixed
into: it uses the session's state, lock, model thread and stores as declared below.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

import deployments.engine.state as sam_state
from deployments.engine.features import FeatureCache, FrameToEncode, UpcomingFrame
from deployments.engine.frames import FrameSource
from deployments.engine.ledger import is_exact, mark_inexact
from deployments.engine.masks import MaskStore, encode_masks
from deployments.engine.retention import RetentionWindow
from deployments.protocol.errors import ConflictError, InvalidRequestError, NotFoundError
from deployments.protocol.types import (
    FrameMasks,
    MaskSource,
    PropagationDone,
    PropagationEvent,
    PropagationProgress,
    PropagationRequest,
    VideoInfo,
)

T = TypeVar("T")
# (frame index, propagated objects, bool masks [N, H, W], their scores, all exact)
_StepResult = tuple[int, list[int], np.ndarray, list[float], bool]


@dataclass
class PropagationPlan:
    """A validated propagation: objects, start frame, frames per pass, passes to run."""

    obj_ids: list[int]
    start: int
    max_frames: int
    direction: Literal["forward", "backward", "both"]
    reverse_passes: tuple[bool, ...]
    total_frames: int
    propagation_id: int
    # Per object, its prompted frames: there the propagation hands back the prompt's mask.
    prompt_frames: dict[int, frozenset[int]]

    def running(self) -> dict[str, Any]:
        """What a checkpoint records of it (``EngineSession._mark_interrupted``)."""
        return {"propagation_id": self.propagation_id, "start": self.start}


class Propagation(Iterator[PropagationEvent]):
    """A running propagation's events (see ``EngineSession.propagate``). ``close`` may come from any
    thread, also while another one waits in ``next``: it stops the propagation after the frame
    in flight, which is stored, and returns once the session is free."""

    def __init__(
        self, events: Generator[PropagationEvent | None, None, None], cancel: threading.Event
    ) -> None:
        self._events = events
        self._cancel = cancel
        self._step = threading.Lock()  # the generator runs in one thread at a time

    def __next__(self) -> PropagationEvent:
        with self._step:
            event = next(self._events)
        assert event is not None  # only the start, which ``EngineSession.propagate`` consumed
        return event

    def cancel(self) -> None:
        """Stop after the frame in flight; the events end with a cancelled ``PropagationDone``."""
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()
        with self._step:
            self._events.close()


class SessionPropagation:
    """Starting, running and cancelling a session's propagation (mixed into ``EngineSession``)."""

    video: VideoInfo
    frames: FrameSource
    masks: MaskStore
    feature_cache: FeatureCache
    _predictor: Any
    _state: sam_state.State
    _lock: threading.Lock
    _meta: dict[int, Any]
    _progress: PropagationProgress | None
    _running: Propagation | None
    _propagations: int
    _retention: RetentionWindow
    _anchors: list[int]
    _check_open: Callable[[], None]
    _check_frame: Callable[[int], None]
    _run: Callable[[Callable[[], Any]], Any]
    _submit: Callable[..., Future]
    _save_checkpoint: Callable[[dict[str, Any] | None], None]

    def propagate(self, request: PropagationRequest) -> Propagation:
        """Start a propagation; returns its events: one ``FrameMasks`` per frame as soon as it
        is computed (and stored), then one ``PropagationDone``.

        Validation and the one-propagation-per-session check happen here, before the first
        frame: InvalidRequestError, FrameOutOfRangeError, ConflictError. Iterate the events to
        their end or close them: the session holds them until then (so that closing the session
        can stop them), and counts as propagating.
        """
        with self._lock:
            self._check_open()
            if self._running is not None:
                raise ConflictError("a propagation is already running on this session")
            plan = self._plan(request)
            self._propagations = plan.propagation_id
            self._progress = PropagationProgress(
                direction=plan.direction, done_frames=0, total_frames=plan.total_frames
            )
            cancel = threading.Event()
            events = self._propagation(plan, self._progress, cancel)
            next(events)  # started: its cleanup runs however it ends (closed, dropped)
            self._running = running = Propagation(events, cancel)
        return running

    def cancel_propagation(self) -> bool:
        """Ask a running propagation to stop after its current frame; False if none runs."""
        with self._lock:
            if self._running is None:
                return False
            self._running.cancel()
            return True

    def _plan(self, request: PropagationRequest) -> PropagationPlan:
        prompted = sam_state.prompted_objects(self._state)
        obj_ids = request.obj_ids if request.obj_ids is not None else prompted
        unknown = [o for o in obj_ids if o not in self._meta]
        if unknown:
            raise NotFoundError(f"objects {unknown} not found in this session", obj_ids=unknown)
        unprompted = [o for o in obj_ids if o not in prompted]
        if unprompted or not obj_ids:
            raise InvalidRequestError(
                "nothing to propagate: add a prompt first"
                if not obj_ids
                else f"objects {unprompted} have no prompt to propagate from"
            )
        first_prompt = min(f for o in obj_ids for f in sam_state.prompt_frames(self._state, o))
        start = request.start_frame_index if request.start_frame_index is not None else first_prompt
        self._check_frame(start)
        limit = request.max_frames or self.video.num_frames
        # Frame counts as SAM 2 walks them: the start frame and up to `limit` frames past it;
        # backward from frame 0 walks nothing.
        forward = min(limit, self.video.num_frames - 1 - start) + 1
        backward = min(limit, start) + 1 if start > 0 else 0
        passes, total = {
            "forward": ((False,), forward),
            "backward": ((True,), backward),
            "both": ((False, True), forward + max(backward - 1, 0)),  # the start frame once
        }[request.direction]
        prompt_frames = {o: frozenset(sam_state.prompt_frames(self._state, o)) for o in obj_ids}
        return PropagationPlan(
            obj_ids,
            start,
            limit,
            request.direction,
            passes,
            total,
            self._propagations + 1,
            prompt_frames,
        )

    def _propagation(
        self, plan: PropagationPlan, progress: PropagationProgress, cancel: threading.Event
    ) -> Generator[PropagationEvent | None, None, None]:
        """The session is claimed (``propagate``); the first ``next`` arms the cleanup."""
        approximate: list[int] = []
        try:
            yield None
            began = time.perf_counter()
            self._run(lambda: self._begin(plan))
            self._save_checkpoint(plan.running())
            for n, reverse in enumerate(plan.reverse_passes):
                skip = plan.start if n > 0 else None  # reported by the first pass
                yield from self._pass(plan, reverse, skip, progress, cancel, approximate)
                if cancel.is_set():
                    break
            yield PropagationDone(
                frames=progress.done_frames,
                elapsed_s=round(time.perf_counter() - began, 4),
                cancelled=cancel.is_set(),
                exact=not approximate,
                approximate_frames=_runs(approximate),
            )
        finally:
            self._save_checkpoint(None)
            with self._lock:
                self._progress = None
                self._running = None

    def _begin(self, plan: PropagationPlan) -> None:
        """Consolidate the prompts into SAM 2's memory now (what ``propagate_in_video`` does
        first; its own call then finds nothing to do), so the checkpoint written before the
        first frame holds them (model thread)."""
        sam_state.forget_lookups(self._state)
        self._predictor.propagate_in_video_preflight(
            sam_state.object_view(self._state, plan.obj_ids)
        )
        self._anchors = [plan.start]

    def _pass(
        self,
        plan: PropagationPlan,
        reverse: bool,
        skip: int | None,
        progress: PropagationProgress,
        cancel: threading.Event,
        approximate: list[int],
    ) -> Iterator[FrameMasks]:
        """One direction, pipelined by one frame: the model computes frame k+1 while frame k is
        encoded, stored and handed out. A frame in flight when the consumer leaves is still
        stored, so every computed mask lands in the MaskStore. Frames computed from memory the
        window had dropped go to ``approximate``. ``skip``: the start frame of a second pass,
        reported and stored by the first; SAM 2 keeps the second pass's output there (as stock
        does), while the stream and the MaskStore keep the one mask they reported."""
        view = sam_state.object_view(self._state, plan.obj_ids)
        steps = self._predictor.propagate_in_video(
            view,
            start_frame_idx=plan.start,
            max_frame_num_to_track=plan.max_frames,
            reverse=reverse,
        )
        self._anchors.append(plan.start)
        step, upcoming = self._step_fn(steps, view, plan, reverse)
        pending: Future[_StepResult | None] | None = self._submit(step, upcoming)
        try:
            while (result := pending.result()) is not None:
                pending = None if cancel.is_set() else self._submit(step, upcoming)
                if result[0] != skip:
                    event = self._record(result, plan)
                    if not result[-1]:
                        approximate.append(event.frame_index)
                    with self._lock:
                        progress.done_frames += 1
                    yield event
                if pending is None:
                    return
            pending = None
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    if (result := pending.result()) is not None and result[0] != skip:
                        self._record(result, plan)
            self._run(steps.close)

    def _step_fn(
        self, steps: Iterator, view: sam_state.State, plan: PropagationPlan, reverse: bool
    ) -> tuple[Callable[[], _StepResult | None], UpcomingFrame]:
        """One frame of SAM 2's propagation, whether it read what stock SAM 2 reads, and the
        retention window moved along (executor thread); and the frame the next step will run
        the image encoder on, for the ``EncoderBatcher``."""
        sign = -1 if reverse else 1
        # SAM 2's processing order (propagate_in_video); backward from frame 0 walks nothing.
        if reverse:
            walk = range(plan.start, max(plan.start - plan.max_frames, 0) - 1, -1)
            walk = walk if plan.start > 0 else range(0)
        else:
            walk = range(plan.start, min(plan.start + plan.max_frames, len(self.frames) - 1) + 1)
        next_frame = plan.start

        def step() -> _StepResult | None:
            nonlocal next_frame
            try:
                with self.feature_cache.propagation_step():
                    frame, obj_ids, video_res_masks = next(steps)
            except StopIteration:
                return None
            next_frame = frame + sign
            # The next frame is usually prefetched already; start the one after it now.
            self.frames.prefetch(frame + sign)
            self.frames.prefetch(frame + 2 * sign)
            exact = all([_tracked_exactly(view, i, frame) for i in range(len(obj_ids))])
            self._anchors[-1] = frame
            self._retention.enforce(self._state, self._anchors)
            scores = [
                torch.sigmoid(
                    sam_state.frame_output(self._state, o, frame)["object_score_logits"].float()
                ).item()
                for o in obj_ids
            ]
            masks = (video_res_masks[:, 0] > 0).cpu().numpy()
            return frame, list(obj_ids), masks, scores, exact

        def upcoming() -> FrameToEncode | None:
            """None past the walk's end, and where every object has a prompt (SAM 2 reuses
            the prompt's output there and encodes nothing)."""
            frame = next_frame
            outputs = view["output_dict_per_obj"].values()
            if frame not in walk or all(frame in o["cond_frame_outputs"] for o in outputs):
                return None
            return FrameToEncode(self.feature_cache, frame, lambda: self.frames[frame])

        return step, upcoming

    def _record(self, result: _StepResult, plan: PropagationPlan) -> FrameMasks:
        """Store a propagated frame's masks, marked with where each came from."""
        frame, obj_ids, masks, scores, _ = result
        sources: list[MaskSource] = [
            "prompt" if frame in plan.prompt_frames[o] else "propagation" for o in obj_ids
        ]
        self.masks.put(frame, encode_masks(obj_ids, masks, scores, sources, plan.propagation_id))
        return FrameMasks(frame_index=frame, masks=self.masks.frame(frame))


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


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frames as runs [first, last] of consecutive frames."""
    runs: list[tuple[int, int]] = []
    for frame in sorted(set(frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs

"""Propagation on a session: the plan (objects, start, passes), the running ``Propagation`` and
its model work, pipelined by one frame, through stock SAM 2's ``propagate_in_video``.

Re-detection (``PropagationRequest.redetect``): see ``concepts``, and ``_redetect``.

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

import deployments.engine.state as sam_state
from deployments.engine.concepts import Detect, NewObject, Redetection, log_entry
from deployments.engine.features import FeatureCache
from deployments.engine.frames import FrameSource
from deployments.engine.mask_store import MaskStore, encode_masks
from deployments.engine.prompting import Applied
from deployments.engine.retention import RetentionWindow
from deployments.engine.walk import StepResult, Walk, open_walk, with_applied
from deployments.protocol.concepts import ObjectAdded, PropagationStreamEvent
from deployments.protocol.errors import ConflictError, InvalidRequestError, NotFoundError
from deployments.protocol.types import (
    FrameMasks,
    MaskSource,
    PropagationDone,
    PropagationProgress,
    PropagationRequest,
    VideoInfo,
)

T = TypeVar("T")


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
    redetection: Redetection | None = None

    def running(self) -> dict[str, Any]:
        """What a checkpoint records of it (``EngineSession._mark_interrupted``)."""
        return {"propagation_id": self.propagation_id, "start": self.start}


class Propagation(Iterator[PropagationStreamEvent]):
    """A running propagation's events (see ``EngineSession.propagate``). ``close`` may come from any
    thread, also while another one waits in ``next``: it stops the propagation after the frame
    in flight, which is stored, and returns once the session is free."""

    def __init__(
        self,
        events: Generator[PropagationStreamEvent | None, None, None],
        cancel: threading.Event,
    ) -> None:
        self._events = events
        self._cancel = cancel
        self._step = threading.Lock()  # the generator runs in one thread at a time

    def __next__(self) -> PropagationStreamEvent:
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
    match_iou: float
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
    _log: Callable[..., None]
    _redetected: Callable[[int, dict[int, Any], Redetection], list[NewObject]]
    _add_found: Callable[[int, list[NewObject]], list[Applied]]

    def propagate(
        self,
        request: PropagationRequest,
        detect: Detect | None = None,
    ) -> Propagation:
        """Start a propagation; returns its events: one ``FrameMasks`` per frame as soon as it
        is computed (and stored), then one ``PropagationDone``. With ``request.redetect``,
        ``detect`` finds instances on the frames it names, and each new object's
        ``ObjectAdded`` comes before its frame's ``FrameMasks`` (module docstring); an
        instance matches an object at mask IoU ``concept_match_iou`` or more.

        Validation and the one-propagation-per-session check happen here, before the first
        frame: InvalidRequestError (also ``redetect`` without ``detect``),
        FrameOutOfRangeError, ConflictError. Iterate the events to their end or close them:
        the session holds them until then (so that closing the session can stop them), and
        counts as propagating. Whatever ``detect`` raises ends the events with it.
        """
        with self._lock:
            self._check_open()
            if self._running is not None:
                raise ConflictError("a propagation is already running on this session")
            plan = self._plan(request, detect)
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

    def _plan(self, request: PropagationRequest, detect: Detect | None) -> PropagationPlan:
        prompted = sam_state.prompted_objects(self._state)
        obj_ids = list(request.obj_ids if request.obj_ids is not None else prompted)
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
        redetection = None
        if request.redetect is not None:
            if detect is None:
                raise InvalidRequestError("redetect needs a concept detector")
            redetect = request.redetect
            redetection = Redetection(
                redetect.text, redetect.every_n_frames, detect, self.match_iou
            )
        return PropagationPlan(
            obj_ids,
            start,
            limit,
            request.direction,
            passes,
            total,
            self._propagations + 1,
            prompt_frames,
            redetection,
        )

    def _propagation(
        self, plan: PropagationPlan, progress: PropagationProgress, cancel: threading.Event
    ) -> Generator[PropagationStreamEvent | None, None, None]:
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
    ) -> Iterator[FrameMasks | ObjectAdded]:
        """One direction, pipelined by one frame: the model computes frame k+1 while frame k is
        encoded, stored and handed out (a frame that re-detects first waits for its detection).
        A frame in flight when the consumer leaves is still stored, so every computed mask
        lands in the MaskStore. Frames computed from memory the window had dropped go to
        ``approximate``. ``skip``: the start frame of a second pass, reported and stored by the
        first; SAM 2 keeps the second pass's output there (as stock does), while the stream and
        the MaskStore keep the one mask they reported."""
        walk = self._open_walk(plan, plan.start, plan.max_frames, reverse)
        self._anchors.append(plan.start)
        pending: Future[StepResult | None] | None = self._submit(walk.step, walk.upcoming)
        try:
            while (result := pending.result()) is not None:
                pending, added = None, []
                redetection = plan.redetection
                if redetection and result[0] != skip and redetection.due(result[0], plan.start):
                    added, result, walk = self._redetect(plan, walk, result, reverse)
                if not cancel.is_set():
                    pending = self._submit(walk.step, walk.upcoming)
                if result[0] != skip:
                    event = self._record(result, plan)
                    if not result[-1]:
                        approximate.append(event.frame_index)
                    with self._lock:
                        progress.done_frames += 1
                    yield from added
                    yield event
                if pending is None:
                    return
            pending = None
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    if (result := pending.result()) is not None and result[0] != skip:
                        self._record(result, plan)
            self._run(walk.steps.close)

    def _open_walk(self, plan: PropagationPlan, start: int, max_frames: int, reverse: bool) -> Walk:
        return open_walk(
            self._predictor,
            self._state,
            plan.obj_ids,
            start,
            max_frames,
            reverse,
            frames=self.frames,
            features=self.feature_cache,
            retention=self._retention,
            anchors=self._anchors,
        )

    def _redetect(
        self, plan: PropagationPlan, walk: Walk, result: StepResult, reverse: bool
    ) -> tuple[list[ObjectAdded], StepResult, Walk]:
        """Re-detect on the frame just computed (``result``; ``concepts._redetected``). New
        objects: SAM 2's walk is closed, their mask prompts applied (``add_new_mask``) and
        logged, and the walk starts again from that frame with every object: stock SAM 2
        given "propagate to the frame, add the masks, propagate from the frame", which
        recomputes the other objects there as they were. (From the next frame instead, a
        backward walk could not go on to frame 0: SAM 2 walks nothing backward from it.) On
        the walk's last frame nothing is left to walk: the new masks are the prompts'. The
        new objects are tracked by the later passes too. Returns the ``ObjectAdded`` events,
        the frame's result (every object) and the walk to go on with."""
        assert plan.redetection is not None
        frame, obj_ids, masks, scores, _ = result
        computed = {m.obj_id: m.rle for m in encode_masks(obj_ids, masks, scores)}
        new = self._redetected(frame, computed, plan.redetection)
        if not new:
            return [], result, walk
        self._run(walk.steps.close)
        text = plan.redetection.text.strip()
        with self._lock:
            applied = self._add_found(frame, new)
            self._log(log_entry(frame, text, new), plan.running())
        plan.obj_ids.extend(o.obj_id for o in new)
        plan.prompt_frames.update({o.obj_id: frozenset({frame}) for o in new})
        added = [
            ObjectAdded(
                frame_index=frame,
                obj_id=o.obj_id,
                name=o.name,
                category=o.category,
                detector_score=o.score,
            )
            for o in new
        ]
        if frame == walk.frames[-1]:  # nothing left to walk: the walk stays closed
            return added, with_applied(result, applied), walk
        walk = self._open_walk(plan, frame, abs(walk.frames[-1] - frame), reverse)
        restarted = self._submit(walk.step, walk.upcoming).result()
        assert restarted is not None and restarted[0] == frame
        return added, restarted, walk

    def _record(self, result: StepResult, plan: PropagationPlan) -> FrameMasks:
        """Store a propagated frame's masks, marked with where each came from."""
        frame, obj_ids, masks, scores, _ = result
        sources: list[MaskSource] = [
            "prompt" if frame in plan.prompt_frames[o] else "propagation" for o in obj_ids
        ]
        self.masks.put(frame, encode_masks(obj_ids, masks, scores, sources, plan.propagation_id))
        return FrameMasks(frame_index=frame, masks=self.masks.frame(frame))


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frames as runs [first, last] of consecutive frames."""
    runs: list[tuple[int, int]] = []
    for frame in sorted(set(frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs

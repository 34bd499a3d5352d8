"""``Session``: one video's SAM 2 state, frames and masks, and the operations on them.

What lives where: SAM 2's inference state (every prompt's outputs, and the outputs of tracked
frames within the ``RetentionWindow``) on the model's device; the frames in the source video,
decoded on demand by the ``FrameSource`` (a bounded buffer of the frames a walk needs); every
computed mask in the ``MaskStore`` on the session directory; with ``persist``, the prompt log
in the session store and SAM 2's prompt state in a ``StateCheckpoint`` beside the masks. All
model work runs on the shared ``ModelExecutor``.

Every operation is stock SAM 2's (``prompting``, ``SAM2VideoPredictor.propagate_in_video``)
on that state, so its masks are stock SAM 2's, bit for bit, while what SAM 2 reads is still
held; where the window dropped something it reads, the result says ``exact=False``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np
import torch

from deployments.engine import prompting
from deployments.engine import state as sam_state
from deployments.engine.checkpoint import StateCheckpoint
from deployments.engine.executor import ModelExecutor
from deployments.engine.exports import (
    ExportFormat,
    ExportSource,
    render_overlay,
    write_export,
    write_track_zip,
)
from deployments.engine.features import FeatureCache, FrameToEncode, UpcomingFrame
from deployments.engine.frames import FrameSource
from deployments.engine.ledger import is_exact, mark_inexact
from deployments.engine.masks import MaskStore, decode_mask, encode_masks
from deployments.engine.retention import RetentionWindow
from deployments.protocol.errors import (
    ConflictError,
    FrameOutOfRangeError,
    InvalidPromptError,
    InvalidRequestError,
    NotFoundError,
    SessionUnavailableError,
)
from deployments.protocol.types import (
    ClearResult,
    FrameMasks,
    MaskSource,
    ObjectInfo,
    ObjectTimeline,
    Prompt,
    PromptResult,
    PropagationDone,
    PropagationEvent,
    PropagationProgress,
    PropagationRequest,
    ReviewItem,
    SessionInfo,
    TimelineMark,
    VideoInfo,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
# (frame index, propagated objects, bool masks [N, H, W], their scores, all exact)
_StepResult = tuple[int, list[int], np.ndarray, list[float], bool]


@dataclass
class _ObjectMeta:
    name: str | None = None
    category: str | None = None


@dataclass
class _Plan:
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
        """What a checkpoint records of a propagation under way (``Session._mark_interrupted``)."""
        return {"propagation_id": self.propagation_id, "start": self.start}


class Propagation(Iterator[PropagationEvent]):
    """A running propagation's events (see ``Session.propagate``). ``close`` may come from any
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
        assert event is not None  # only the start, which ``Session.propagate`` consumed
        return event

    def cancel(self) -> None:
        """Stop after the frame in flight; the events end with a cancelled ``PropagationDone``."""
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()
        with self._step:
            self._events.close()


class Session:
    """One annotation session. Thread-safe; prompts are refused while it propagates."""

    def __init__(
        self,
        session_id: str,
        directory: Path,
        video: VideoInfo,
        model_name: str,
        predictor: torch.nn.Module,
        executor: ModelExecutor,
        frames: FrameSource,
        *,
        max_objects: int,
        offload_state_to_cpu: bool,
        feature_cache_bytes: int,
        retention_bytes: int,
    ) -> None:
        self.id = session_id
        self.directory = directory
        self.video = video
        self.model_name = model_name
        self.created_at = datetime.now().astimezone()
        self.max_objects = max_objects
        self._predictor = predictor
        self._executor = executor
        self.frames = frames
        self.masks = MaskStore(directory / "masks.sqlite")
        self._propagations = self.masks.last_propagation_id()
        # Image features of the frames computed last, on the model's device (see features).
        self.feature_cache = FeatureCache(feature_cache_bytes)
        self._state = sam_state.new_state(
            self.frames,
            video.height,
            video.width,
            predictor.device,
            offload_state_to_cpu,
            self.feature_cache,
        )
        self._retention = RetentionWindow(sam_state.memory_window(predictor), retention_bytes)
        # Where the latest propagation started and where each pass is or ended: the
        # retention window keeps SAM 2's look-back around them.
        self._anchors: list[int] = []
        self._meta: dict[int, _ObjectMeta] = {}
        # Held by every edit from its checks to its log entry, by the start and end of a
        # propagation, and by reads of objects, prompts and progress, so a read sees the
        # session between two edits. A running propagation changes none of these: it writes
        # SAM 2's outputs on the model thread and masks in the MaskStore.
        self._lock = threading.Lock()
        self._progress: PropagationProgress | None = None
        self._running: Propagation | None = None
        self._closed = False
        # The prompt log's one writer (see ``persist``): called under the session's lock right
        # after each prompt, clear, removal or reset is applied, with the entry applied and its
        # sequence number; if it raises, the request fails and the caller should drop this state.
        self._journal: Callable[[dict[str, Any]], None] = _no_journal
        self._checkpoint: StateCheckpoint | None = None
        self._seq = 0

    def persist(self, journal: Callable[[dict[str, Any]], None]) -> None:
        """Log every operation through ``journal`` and keep SAM 2's prompt state in a
        checkpoint on the session directory, so another replica can rebuild the session
        (``restore``). One-shot sessions keep neither."""
        self._journal = journal
        self._checkpoint = StateCheckpoint(self.directory / "sam2_state")

    # ---- info -------------------------------------------------------------------------------

    def info(self) -> SessionInfo:
        counts = self.masks.masked_frames()
        with self._lock:
            objects = [self._object_info(obj_id, counts) for obj_id in self._meta]
            progress = self._progress.model_copy() if self._progress else None
        return SessionInfo(
            session_id=self.id,
            status="propagating" if progress else "ready",
            model=self.model_name,
            created_at=self.created_at,
            video=self.video,
            objects=objects,
            propagation=progress,
        )

    def objects(self) -> list[ObjectInfo]:
        counts = self.masks.masked_frames()
        with self._lock:
            return [self._object_info(obj_id, counts) for obj_id in self._meta]

    def frame_jpeg(self, frame_index: int, quality: int = 90) -> bytes:
        """The frame (frame space) as JPEG, encoded now; FrameOutOfRangeError outside the
        video."""
        self._check_frame(frame_index)
        return _jpeg(self.frames.read_rgb(frame_index), quality)

    def export(self, fmt: ExportFormat, target: Path, obj_id: int | None = None) -> None:
        """Write an export of the stored masks to ``target`` (see ``exports``)."""
        if obj_id is not None:
            self._check_object(obj_id)
        write_export(self._export_source(), fmt, target, obj_id)

    def export_track_zip(self, target: Path) -> None:
        write_track_zip(self._export_source(), target)

    def overlay_jpeg(self, frame_index: int, quality: int = 90) -> bytes:
        """The processed frame with every stored mask drawn on it, as JPEG."""
        self._check_frame(frame_index)
        rgb = render_overlay(self.frames.read_rgb(frame_index), self.masks.frame(frame_index))
        return _jpeg(rgb, quality)

    def review(self, score_threshold: float, iou_threshold: float) -> list[ReviewItem]:
        return self.masks.review(score_threshold, iou_threshold)

    def timeline(self, obj_id: int, score_threshold: float, iou_threshold: float) -> ObjectTimeline:
        """One object's runs of masked frames, prompted frames and review marks: a timeline of
        an hour-long video without sending its masks. NotFoundError for an unknown object."""
        with self._lock:
            self._check_object(obj_id)
            prompt_frames = sam_state.prompt_frames(self._state, obj_id)
        items = self.masks.review(score_threshold, iou_threshold, obj_id)
        return ObjectTimeline(
            obj_id=obj_id,
            ranges=self.masks.ranges(obj_id),
            prompt_frames=prompt_frames,
            review=[
                TimelineMark(frame_index=i.frame_index, reason=i.reason, value=i.value)
                for i in items
            ],
        )

    def state_nbytes(self) -> int:
        """Bytes of SAM 2 state tensors plus decoded frames this session holds."""
        return self._run(lambda: sam_state.nbytes(self._state))

    # ---- objects and prompts -------------------------------------------------------------------

    def add_prompt(self, prompt: Prompt, *, last: bool = False) -> PromptResult:
        """Apply a prompt; returns the masks of every object on that frame. Unless it is the
        session's ``last`` (a one-shot image), its memory is encoded behind it, ahead of the
        next propagation.

        Raises FrameOutOfRangeError, InvalidPromptError (outside the frame, too many
        objects), ConflictError while a propagation runs.
        """
        self._check_frame(prompt.frame_index)
        inputs = self._prompt_inputs(prompt)
        with self._idle():
            obj_id = prompt.obj_id if prompt.obj_id is not None else self._next_obj_id()
            if obj_id not in self._meta and len(self._meta) >= self.max_objects:
                raise InvalidPromptError(f"a session holds at most {self.max_objects} objects")
            applied = self._run(lambda: self._apply(prompt.frame_index, obj_id, inputs))
            if not last:
                # SAM 2 encodes a prompt's memory when a propagation starts; do that model work
                # now, on the otherwise idle model thread (the same tensors, computed earlier).
                self._submit(
                    lambda: sam_state.encode_pending_memories(self._predictor, self._state)
                )
            self._meta.setdefault(obj_id, _ObjectMeta())
            self._store_applied(prompt.frame_index, [applied], "prompt")
            entry = prompt.model_copy(update={"obj_id": obj_id}).model_dump(mode="json")
            self._log({"op": "prompt", "prompt": entry})
        return PromptResult(
            frame_index=prompt.frame_index,
            obj_id=obj_id,
            masks=self.masks.frame(prompt.frame_index),
            exact=applied.exact,
        )

    def clear_prompts(self, frame_index: int, obj_id: int | None = None) -> ClearResult:
        """Remove the prompts of one object (or of all) on a frame; returns the frame's masks
        as SAM 2 now holds them (``prompting.clear_prompts``)."""
        self._check_frame(frame_index)
        with self._idle():
            if obj_id is not None:
                self._check_object(obj_id)
            cleared = self._run(
                lambda: self._after(
                    prompting.clear_prompts(self._predictor, self._state, frame_index, obj_id)
                )
            )
            self._store_applied(frame_index, cleared, "propagation")
            self._log({"op": "clear", "frame_index": frame_index, "obj_id": obj_id})
        return ClearResult(
            frame_index=frame_index,
            masks=self.masks.frame(frame_index),
            exact=all(c.exact for c in cleared),
        )

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts, SAM 2 state and masks."""
        with self._idle():
            self._check_object(obj_id)
            self._run(lambda: self._after(self._remove_in_model(obj_id)))
            self.masks.delete(obj_id=obj_id)
            del self._meta[obj_id]
            self._log({"op": "remove_object", "obj_id": obj_id})

    def update_object(
        self, obj_id: int, name: str | None = None, category: str | None = None
    ) -> ObjectInfo:
        counts = self.masks.masked_frames()
        with self._lock:
            self._check_object(obj_id)
            meta = self._meta[obj_id]
            if name is not None:
                meta.name = name
            if category is not None:
                meta.category = category
            return self._object_info(obj_id, counts)

    def reset(self) -> SessionInfo:
        """Back to the uploaded video alone: no objects, prompts or masks."""
        with self._idle():
            self._run(lambda: self._predictor.reset_state(self._state))
            self.masks.delete()
            self._meta.clear()
            self._log({"op": "reset"})
        return self.info()

    # ---- propagation ---------------------------------------------------------------------------

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

    def restore(
        self, log: list[dict[str, Any]], names: dict[int, tuple[str | None, str | None]]
    ) -> None:
        """Rebuild SAM 2's state on a session reopened from its directory (another replica
        held it): the checkpoint's prompt state, bit for bit, with no non-conditioning output
        (as a live session whose window dropped them all), then the prompt-log entries after
        the checkpoint's sequence number applied as live operations, in order. Without a
        checkpoint (a log written before checkpoints existed) the whole log is replayed and
        every output marked inexact. Later entries continue the numbering. The MaskStore is
        left as it is: it already holds every mask computed before, on whichever replica."""
        entries = sorted(log, key=lambda entry: entry.get("seq", 0))
        with self._idle():
            self._seq = self._run(lambda: self._rebuild(entries))
            self._meta = {obj_id: _ObjectMeta() for obj_id in self._state["obj_ids"]}
            for obj_id, (name, category) in names.items():
                if obj_id in self._meta:
                    self._meta[obj_id] = _ObjectMeta(name, category)
            self._save_checkpoint(None)

    def close(self) -> None:
        """Stop a running propagation, waiting for its frame in flight (stored), then free the
        model state, frame readers and mask store (the directory stays). Later calls get
        SessionUnavailableError."""
        with self._lock:
            self._closed = True
            running = self._running
        if running is not None:
            running.close()
        with self._lock:  # after an edit in progress
            self._run(self._state.clear)
            self._run(self.feature_cache.clear)
            self.frames.close()
            self.masks.close()

    # ---- internals -----------------------------------------------------------------------------

    def _export_source(self) -> ExportSource:
        return ExportSource(self.video, self.frames, self.masks, self.objects())

    def _run(self, fn: Callable[[], T]) -> T:
        return self._executor.run(self.id, fn)

    def _log(self, entry: dict[str, Any]) -> None:
        """Number an applied operation, hand it to the journal, then checkpoint the state it
        led to (the session's lock held)."""
        self._seq += 1
        self._journal({**entry, "seq": self._seq})
        self._save_checkpoint(None)

    def _save_checkpoint(self, running: dict[str, Any] | None) -> None:
        """Checkpoint SAM 2's prompt state at the current sequence number, if persisted and
        not closed (a closed copy may belong to a replica the session has moved away from).
        A failed write is logged and leaves the older checkpoint: a rebuild then replays the
        log entries after it."""
        checkpoint = self._checkpoint
        if checkpoint is None or self._closed:
            return
        try:
            self._run(lambda: checkpoint.save(self._state, self._seq, running))
        except Exception:
            logger.exception("checkpointing session %s failed", self.id)

    def _submit(self, fn: Callable[[], T], upcoming: UpcomingFrame | None = None) -> Future[T]:
        return self._executor.submit(self.id, fn, upcoming)

    @contextlib.contextmanager
    def _idle(self) -> Iterator[None]:
        """Hold the session for an edit; refused while a propagation runs."""
        with self._lock:
            self._check_open()
            if self._running is not None:
                raise ConflictError(
                    "a propagation is running on this session; cancel it or wait for it"
                )
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise SessionUnavailableError(f"session {self.id} was closed on this replica")

    def _check_frame(self, frame_index: int) -> None:
        if not 0 <= frame_index < self.video.num_frames:
            raise FrameOutOfRangeError(
                f"frame_index {frame_index} is outside the video (0..{self.video.num_frames - 1})",
                frame_index=frame_index,
                num_frames=self.video.num_frames,
            )

    def _check_object(self, obj_id: int) -> None:
        if obj_id not in self._meta:
            raise NotFoundError(f"object {obj_id} not found in this session", obj_id=obj_id)

    def _next_obj_id(self) -> int:
        return max(self._meta, default=0) + 1

    def _object_info(self, obj_id: int, masked: dict[int, int]) -> ObjectInfo:
        meta = self._meta[obj_id]
        return ObjectInfo(
            obj_id=obj_id,
            name=meta.name,
            category=meta.category,
            prompt_frames=sam_state.prompt_frames(self._state, obj_id),
            masked_frames=masked.get(obj_id, 0),
        )

    def _prompt_inputs(self, prompt: Prompt) -> prompting.PromptInputs:
        """Points and box in frame pixels, mask as bool array; InvalidPromptError if outside."""
        w, h = self.video.width, self.video.height
        scale = np.array([w, h], dtype=np.float32) if prompt.normalized else np.ones(2, np.float32)
        points = labels = box = mask = None
        if prompt.points:
            points = np.asarray(prompt.points, dtype=np.float32) * scale
            self._check_inside(points, "point")
            labels = np.asarray(prompt.labels or [1] * len(points), dtype=np.int32)
        if prompt.box is not None:
            box = np.asarray(prompt.box, dtype=np.float32).reshape(2, 2) * scale
            self._check_inside(box, "box corner")
        if prompt.mask is not None:
            if tuple(prompt.mask.size) != (h, w):
                raise InvalidPromptError(
                    f"mask size {list(prompt.mask.size)} differs from the frame size [{h}, {w}]"
                )
            try:
                mask = decode_mask(prompt.mask)
            except (ValueError, TypeError, UnicodeError) as exc:
                raise InvalidPromptError(f"mask is not a valid COCO RLE: {exc}") from exc
        return prompting.PromptInputs(points, labels, box, mask, prompt.clear_old_points)

    def _check_inside(self, xy: np.ndarray, what: str) -> None:
        w, h = self.video.width, self.video.height
        outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if outside.any():
            x, y = xy[int(np.argmax(outside))]
            raise InvalidPromptError(
                f"{what} ({x:g}, {y:g}) lies outside the {w}x{h} frame", width=w, height=h
            )

    def _apply(self, frame: int, obj_id: int, inputs: prompting.PromptInputs) -> prompting.Applied:
        """A prompt through stock SAM 2 (model thread); a dropped output of the frame is
        stood in for by the stored mask (``prompting``)."""
        applied = prompting.apply_prompt(
            self._predictor, self._state, frame, obj_id, inputs, self._stored_mask
        )
        return self._after(applied)

    def _after(self, result: T) -> T:
        """Let the retention window catch up with an edit (model thread)."""
        self._retention.enforce(self._state, self._anchors)
        return result

    def _stored_mask(self, obj_id: int, frame: int) -> np.ndarray | None:
        stored = next((m.rle for m in self.masks.frame(frame) if m.obj_id == obj_id), None)
        return None if stored is None else decode_mask(stored)

    def _store_applied(
        self, frame: int, results: list[prompting.Applied], source: MaskSource
    ) -> None:
        """Store the masks an edit left on a frame; an object SAM 2 holds nothing of there
        any more loses its mask."""
        kept = [r for r in results if r.mask is not None]
        for gone in (r for r in results if r.mask is None):
            self.masks.delete(obj_id=gone.obj_id, frame_index=frame)
        if kept:
            masks = np.stack([r.mask for r in kept])
            self.masks.put(
                frame,
                encode_masks(
                    [r.obj_id for r in kept], masks, [r.score for r in kept], [source] * len(kept)
                ),
            )

    def _remove_in_model(self, obj_id: int) -> None:
        if obj_id in self._state["obj_id_to_idx"]:
            self._predictor.remove_object(self._state, obj_id, need_output=False)

    def _rebuild(self, entries: list[dict[str, Any]]) -> int:
        """Load the checkpoint and apply the log entries after it (model thread); the last
        sequence number applied."""
        checkpoint = self._checkpoint or StateCheckpoint(self.directory / "sam2_state")
        seq, legacy = 0, not checkpoint.exists()
        if not legacy:
            seq, running = checkpoint.load(self._predictor, self._state)
            if running is not None:
                self._mark_interrupted(running)
        for entry in entries:
            if entry.get("seq", 0) > seq or legacy:
                self._replay(entry)
                seq = entry.get("seq", seq)
        if legacy and entries:
            prompting.mark_all_inexact(self._state)
        self._retention.enforce(self._state, self._anchors)
        return seq

    def _replay(self, entry: dict[str, Any]) -> None:
        """One prompt-log entry applied to SAM 2's state only (model thread). An entry written
        before checkpoints existed says how its frame had been tracked: SAM 2 is shown that."""
        op = entry["op"]
        if op == "prompt":
            prompt = Prompt.model_validate(entry["prompt"])
            idx = self._predictor._obj_id_to_idx(self._state, prompt.obj_id)
            sam_state.adopt(self._state, idx)
            if "tracked" in entry:
                sam_state.set_tracked(self._state, idx, prompt.frame_index, entry["tracked"])
            inputs = self._prompt_inputs(prompt)
            prompting.apply_prompt(
                self._predictor,
                self._state,
                prompt.frame_index,
                prompt.obj_id,
                inputs,
                self._stored_mask,
            )
        elif op == "clear":
            prompting.clear_prompts(
                self._predictor, self._state, entry["frame_index"], entry["obj_id"]
            )
        elif op == "remove_object":
            self._remove_in_model(entry["obj_id"])
        elif op == "reset":
            self._predictor.reset_state(self._state)
        else:
            raise InvalidRequestError(f"unknown prompt-log entry {op!r}")

    def _mark_interrupted(self, running: dict[str, Any]) -> None:
        """A propagation was under way when the checkpoint was written and the replica died:
        the frames it stored masks for were tracked, and stock SAM 2 would hold their outputs
        (dropped here, so what reads them is inexact)."""
        start = running["start"]
        for frame, obj_id in self.masks.propagated(running["propagation_id"]):
            idx = self._state["obj_id_to_idx"].get(obj_id)
            if idx is None or frame in sam_state.prompt_frames(self._state, obj_id):
                continue
            how = "backward" if frame < start else "forward"
            sam_state.set_tracked(self._state, idx, frame, how)
            sam_state.non_cond_outputs(self._state, idx).dropped[frame] = 1

    def _plan(self, request: PropagationRequest) -> _Plan:
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
        return _Plan(
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
        self, plan: _Plan, progress: PropagationProgress, cancel: threading.Event
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

    def _begin(self, plan: _Plan) -> None:
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
        plan: _Plan,
        reverse: bool,
        skip: int | None,
        progress: PropagationProgress,
        cancel: threading.Event,
        approximate: list[int],
    ) -> Iterator[FrameMasks]:
        """One direction, pipelined by one frame: the model computes frame k+1 while frame k is
        encoded, stored and handed out. A frame in flight when the consumer leaves is still
        stored, so every computed mask lands in the MaskStore. Frames computed from memory the
        window had dropped go to ``approximate``."""
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
                event = self._record(result, plan)
                if not result[-1]:
                    approximate.append(event.frame_index)
                if event.frame_index != skip:
                    with self._lock:
                        progress.done_frames += 1
                    yield event
                if pending is None:
                    return
            pending = None
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    if (result := pending.result()) is not None:
                        self._record(result, plan)
            self._run(steps.close)

    def _step_fn(
        self, steps: Iterator, view: sam_state.State, plan: _Plan, reverse: bool
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

    def _record(self, result: _StepResult, plan: _Plan) -> FrameMasks:
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


def _no_journal(entry: dict[str, Any]) -> None:
    """A session outside the session store (one-shot calls, the engine alone) logs nothing."""


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()

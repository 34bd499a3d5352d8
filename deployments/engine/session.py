"""``EngineSession``: one video's SAM 2 state, frames and masks, and the operations on them.

What lives where: SAM 2's inference state (every prompt's outputs, and the outputs of tracked
frames within the ``RetentionWindow``) on the model's device; the frames in the source video,
decoded on demand by the ``FrameSource`` (a bounded buffer of the frames a walk needs); every
computed mask in the ``MaskStore`` (SQLite on the session directory, or PostgreSQL); with
``persist``, the prompt log in the session store and SAM 2's prompt state in a
``StateCheckpoint`` on the session directory. All model work runs on the shared
``ModelExecutor``.

Every operation is stock SAM 2's (``prompting``, ``SAM2VideoPredictor.propagate_in_video``)
on that state, so its masks are stock SAM 2's, bit for bit, while what SAM 2 reads is still
held; where the window dropped something it reads, the result says ``exact=False``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

import deployments.engine.prompting as prompting
import deployments.engine.state as sam_state
from deployments.engine.checkpoint import StateCheckpoint
from deployments.engine.concepts import ObjectMeta, SessionConcepts, object_names
from deployments.engine.executor import ModelExecutor
from deployments.engine.exports import (
    ExportFormat,
    ExportSource,
    encode_jpeg,
    render_overlay,
    write_export,
    write_track_zip,
)
from deployments.engine.features import FeatureCache, UpcomingFrame
from deployments.engine.frames import FrameSource
from deployments.engine.mask_store import MaskStore, encode_masks
from deployments.engine.propagation import Propagation, SessionPropagation
from deployments.engine.rebuild import rebuild_state, remove_object, stored_mask_of
from deployments.engine.retention import RetentionWindow
from deployments.protocol.errors import (
    ConflictError,
    FrameOutOfRangeError,
    NotFoundError,
    SessionUnavailableError,
    TooManyObjectsError,
)
from deployments.protocol.types import (
    ClearResult,
    MaskSource,
    ObjectInfo,
    ObjectTimeline,
    Prompt,
    PromptResult,
    PropagationProgress,
    ReviewItem,
    SessionInfo,
    TimelineMark,
    VideoInfo,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineSession(SessionPropagation, SessionConcepts):
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
        masks: MaskStore,
        *,
        max_objects: int,
        match_iou: float,
        offload_state_to_cpu: bool,
        feature_cache_bytes: int,
        retention_bytes: int,
        overlay_alpha: float,
    ) -> None:
        self.id = session_id
        self.directory = directory
        self.video = video
        self.model_name = model_name
        self.created_at = datetime.now().astimezone()
        self.max_objects = max_objects
        # Text prompts and re-detection: the mask IoU at which an instance is an object.
        self.match_iou = match_iou
        self.overlay_alpha = overlay_alpha
        self._predictor = predictor
        self._executor = executor
        self.frames = frames
        # Every computed mask: SQLite in the directory, or PostgreSQL (``MaskStores``).
        self.masks = masks
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
        self._meta: dict[int, ObjectMeta] = {}
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
        return encode_jpeg(self.frames.read_rgb(frame_index), quality)

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
        masks = self.masks.frame(frame_index)
        rgb = render_overlay(self.frames.read_rgb(frame_index), masks, self.overlay_alpha)
        return encode_jpeg(rgb, quality)

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

        Raises FrameOutOfRangeError, InvalidPromptError (outside the frame),
        TooManyObjectsError, ConflictError while a propagation runs.
        """
        self._check_frame(prompt.frame_index)
        inputs = self._prompt_inputs(prompt)
        with self._idle():
            obj_id = prompt.obj_id if prompt.obj_id is not None else self._next_obj_id()
            if obj_id not in self._meta and len(self._meta) >= self.max_objects:
                raise TooManyObjectsError(f"a session holds at most {self.max_objects} objects")
            applied = self._run(lambda: self._apply(prompt.frame_index, obj_id, inputs))
            if not last:
                # SAM 2 encodes a prompt's memory when a propagation starts; do that model work
                # now, on the otherwise idle model thread (the same tensors, computed earlier).
                self._submit(
                    lambda: sam_state.encode_pending_memories(self._predictor, self._state)
                )
            self._meta.setdefault(obj_id, ObjectMeta())
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
            self._run(lambda: self._after(remove_object(self._predictor, self._state, obj_id)))
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

    def rebuild(
        self, log: list[dict[str, Any]], names: dict[int, tuple[str | None, str | None]]
    ) -> None:
        """Rebuild SAM 2's state on a session reopened from its directory (another replica
        held it), as ``rebuild.rebuild_state`` says: as a live session whose window dropped
        every tracked output. Later entries continue the log's numbering. Names and
        categories: the session store's (``names``), else those the log's text prompts gave.
        The MaskStore is left as it is: it already holds every mask computed before."""
        entries = sorted(log, key=lambda entry: entry.get("seq", 0))
        with self._idle():
            self._seq = self._run(lambda: self._rebuild_state(entries))
            named = object_names(entries, names)
            self._meta = {o: named.get(o, ObjectMeta()) for o in self._state["obj_ids"]}
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
        return ExportSource(self.video, self.frames, self.masks, self.objects(), self.overlay_alpha)

    def _run(self, fn: Callable[[], T]) -> T:
        return self._executor.run(self.id, fn)

    def _log(self, entry: dict[str, Any], running: dict[str, Any] | None = None) -> None:
        """Number an applied operation, hand it to the journal, then checkpoint the state it
        led to (the session's lock held), naming the propagation ``running`` if one is."""
        self._seq += 1
        self._journal({**entry, "seq": self._seq})
        self._save_checkpoint(running)

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
        return prompting.prompt_inputs(prompt, self.video.width, self.video.height)

    def _apply(self, frame: int, obj_id: int, inputs: prompting.PromptInputs) -> prompting.Applied:
        """A prompt through stock SAM 2 (model thread); a dropped output of the frame is
        stood in for by the stored mask (``prompting``)."""
        applied = prompting.apply_prompt(
            self._predictor, self._state, frame, obj_id, inputs, stored_mask_of(self.masks)
        )
        return self._after(applied)

    def _after(self, result: T) -> T:
        """Let the retention window catch up with an edit (model thread)."""
        self._retention.enforce(self._state, self._anchors)
        return result

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

    def _rebuild_state(self, entries: list[dict[str, Any]]) -> int:
        """``rebuild.rebuild_state``, then the retention window (model thread)."""
        checkpoint = self._checkpoint or StateCheckpoint(self.directory / "sam2_state")
        seq = rebuild_state(
            self._predictor, self._state, checkpoint, self.masks, entries, self._prompt_inputs
        )
        self._retention.enforce(self._state, self._anchors)
        return seq


def _no_journal(entry: dict[str, Any]) -> None:
    """A session outside the session store (one-shot calls, the engine alone) logs nothing."""

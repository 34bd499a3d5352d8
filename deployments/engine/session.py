"""``Session``: one video's SAM 2 state, frames and masks, and the operations on them.

What lives where: SAM 2's inference state (memories of prompted frames and of the frames
around the tracking position) on the model's device; the frames in the source video, decoded
on demand by the ``FrameSource`` (a bounded buffer of the frames a walk needs); every computed
mask in the ``MaskStore`` on the session directory. All model work runs on the shared
``ModelExecutor``.

SAM 2's state is a function of the prompt log: every prompt and propagation starts from it
settled (``state.settle``: prompts consolidated, no non-conditioning outputs), and what else
SAM 2 reads when a prompt is applied (how the frame was tracked, the stored mask that seeds
it) is recorded in the prompt's log entry, so a rebuild that replays the log computes exactly
what the session that was never rebuilt computes.
"""

from __future__ import annotations

import contextlib
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
import torch.nn.functional as F

from deployments.engine import state as sam_state
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
from deployments.engine.masks import MaskStore, decode_mask, encode_masks
from deployments.engine.seek_copy import SeekCopy
from deployments.engine.video_source import FrameReader
from deployments.protocol.errors import (
    ConflictError,
    FrameOutOfRangeError,
    InvalidPromptError,
    InvalidRequestError,
    NotFoundError,
    SessionUnavailableError,
)
from deployments.protocol.types import (
    RLE,
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

T = TypeVar("T")
# Logit magnitude given to a mask rebuilt from the MaskStore when it seeds a refinement click
# (SAM 2 clamps previous logits to +/-32; its own confident masks sit around +/-10..20).
_SEED_LOGIT = 10.0
# (frame index, bool masks [N, H, W] of the propagated objects, their scores)
_StepResult = tuple[int, list[int], np.ndarray, list[float]]


@dataclass
class _ObjectMeta:
    name: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class _Context:
    """What SAM 2 reads besides the prompt when it applies one, recorded in the prompt's log
    entry so that a replay applies the same: how the frame had been tracked (SAM 2's
    ``is_init_cond_frame`` and direction follow from it), and the stored mask that seeds a
    click on a frame where SAM 2 holds no output (so it starts from the mask the user sees)."""

    tracked: sam_state.Tracked = None
    seed: RLE | None = None

    @classmethod
    def logged(cls, entry: dict[str, Any]) -> _Context:
        seed = entry.get("seed")
        return cls(entry.get("tracked"), None if seed is None else RLE.model_validate(seed))

    def entry(self) -> dict[str, Any]:
        seed = None if self.seed is None else self.seed.model_dump(mode="json")
        return {"tracked": self.tracked, "seed": seed}


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
        self._window = sam_state.memory_window(predictor)
        self._meta: dict[int, _ObjectMeta] = {}
        # Held by every edit from its checks to its log entry, by the start and end of a
        # propagation, and by reads of objects, prompts and progress, so a read sees the
        # session between two edits. A running propagation changes none of these: it writes
        # SAM 2's outputs on the model thread and masks in the MaskStore.
        self._lock = threading.Lock()
        self._progress: PropagationProgress | None = None
        self._running: Propagation | None = None
        self._closed = False
        # The prompt log's one writer: called under the session's lock right after each prompt,
        # clear, removal or reset is applied, with the entry applied and its sequence number;
        # if it raises, the request fails and the caller should drop this state.
        self.journal: Callable[[dict[str, Any]], None] = _no_journal
        self._seq = 0
        # The seek-friendly copy of its frames the engine has made in the background, if any:
        # reported in ``info`` while under way, cancelled by ``close``.
        self.seek_copy: SeekCopy | None = None

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
            preparation=self.seek_copy.progress() if self.seek_copy else None,
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
        next edit.

        Raises FrameOutOfRangeError, InvalidPromptError (outside the frame, too many
        objects), ConflictError while a propagation runs.
        """
        self._check_frame(prompt.frame_index)
        points, box, mask = self._prompt_inputs(prompt)
        with self._idle():
            obj_id = prompt.obj_id if prompt.obj_id is not None else self._next_obj_id()
            if obj_id not in self._meta and len(self._meta) >= self.max_objects:
                raise InvalidPromptError(f"a session holds at most {self.max_objects} objects")
            mask_out, score, context = self._run(
                lambda: self._apply_live(prompt, obj_id, points, box, mask)
            )
            if not last:
                # Consolidating this prompt is the next edit's first step (settle); do its model
                # work now, on the otherwise idle model thread. Should it fail, settle does it.
                self._submit(
                    lambda: sam_state.encode_pending_memories(self._predictor, self._state)
                )
            self._meta.setdefault(obj_id, _ObjectMeta())
            self.masks.put(
                prompt.frame_index, encode_masks([obj_id], mask_out[None], [score], ["prompt"])
            )
            applied = prompt.model_copy(update={"obj_id": obj_id}).model_dump(mode="json")
            self._log({"op": "prompt", "prompt": applied, **context.entry()})
        return PromptResult(
            frame_index=prompt.frame_index,
            obj_id=obj_id,
            masks=self.masks.frame(prompt.frame_index),
        )

    def clear_prompts(self, frame_index: int, obj_id: int | None = None) -> FrameMasks:
        """Remove the prompts of one object (or of all) on a frame; returns the frame's masks."""
        self._check_frame(frame_index)
        with self._idle():
            if obj_id is not None:
                self._check_object(obj_id)
            self._run(lambda: self._clear_prompts(frame_index, obj_id))
            self._log({"op": "clear", "frame_index": frame_index, "obj_id": obj_id})
        return FrameMasks(frame_index=frame_index, masks=self.masks.frame(frame_index))

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts, SAM 2 state and masks."""
        with self._idle():
            self._check_object(obj_id)
            if obj_id in self._state["obj_id_to_idx"]:
                self._run(
                    lambda: self._predictor.remove_object(self._state, obj_id, need_output=False)
                )
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

    def restore(self, log: list[dict[str, Any]], names: dict[int, tuple[str | None, str | None]]):
        """Rebuild SAM 2's state from the session store's prompt log, in the order of its
        sequence numbers (entries without one first, as listed), on a session reopened from its
        directory (another replica held it); later entries continue the numbering. The
        MaskStore is left as it is: it already holds every mask computed before, on whichever
        replica."""
        entries = sorted(log, key=lambda entry: entry.get("seq", 0))
        with self._idle():
            self._run(lambda: [self._replay(entry) for entry in entries])
            self._seq = entries[-1].get("seq", 0) if entries else 0
            for obj_id, (name, category) in names.items():
                if obj_id in self._meta:
                    self._meta[obj_id] = _ObjectMeta(name, category)

    def switch_model_frames(self, open_reader: Callable[[], FrameReader]) -> None:
        """Read the model's frames through another reader of the same frames from now on (the
        seek-friendly copy, once made; see ``FrameSource.switch_model_frames``), then drop the
        image features computed from the old one, so every prompt after the switch reads the
        new frames only. Raises what opening the reader raised (the old one stays)."""
        switched = self.frames.switch_model_frames(open_reader)
        if switched is None:  # closed
            return
        switched.result()
        self._submit(self.feature_cache.clear).result()

    def close(self) -> None:
        """Stop the seek-friendly copy under way (its partial file removed) and a running
        propagation, waiting for its frame in flight (stored), then free the model state, frame
        readers and mask store (the directory stays). Later calls get
        SessionUnavailableError."""
        with self._lock:
            self._closed = True
            running = self._running
        if self.seek_copy is not None:
            self.seek_copy.cancel()
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
        """Number an applied operation and hand it to the journal (the session's lock held)."""
        self._seq += 1
        self.journal({**entry, "seq": self._seq})

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

    def _prompt_inputs(
        self, prompt: Prompt
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Points and box in frame pixels, mask as bool array; InvalidPromptError if outside."""
        w, h = self.video.width, self.video.height
        scale = np.array([w, h], dtype=np.float32) if prompt.normalized else np.ones(2, np.float32)
        points = box = mask = None
        if prompt.points:
            points = np.asarray(prompt.points, dtype=np.float32) * scale
            self._check_inside(points, "point")
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
        return points, box, mask

    def _check_inside(self, xy: np.ndarray, what: str) -> None:
        w, h = self.video.width, self.video.height
        outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if outside.any():
            x, y = xy[int(np.argmax(outside))]
            raise InvalidPromptError(
                f"{what} ({x:g}, {y:g}) lies outside the {w}x{h} frame", width=w, height=h
            )

    def _apply_live(
        self,
        prompt: Prompt,
        obj_id: int,
        points: np.ndarray | None,
        box: np.ndarray | None,
        mask: np.ndarray | None,
    ) -> tuple[np.ndarray, float, _Context]:
        """A prompt on the settled state, with the context SAM 2 finds now (executor thread):
        a click on a frame where SAM 2 holds no output of the object is seeded with its stored
        mask, the mask the user sees."""
        frame = prompt.frame_index
        sam_state.settle(self._predictor, self._state)
        seed = None
        if mask is None and sam_state.frame_output(self._state, obj_id, frame) is None:
            seed = next((m.rle for m in self.masks.frame(frame) if m.obj_id == obj_id), None)
        context = _Context(sam_state.tracked(self._state, obj_id, frame), seed)
        return *self._apply_prompt(prompt, obj_id, points, box, mask, context), context

    def _apply_prompt(
        self,
        prompt: Prompt,
        obj_id: int,
        points: np.ndarray | None,
        box: np.ndarray | None,
        mask: np.ndarray | None,
        context: _Context,
    ) -> tuple[np.ndarray, float]:
        """Model work of a prompt in ``context`` (executor thread): mask first, then points/box
        on top."""
        frame = prompt.frame_index
        result = None
        idx = self._predictor._obj_id_to_idx(self._state, obj_id)  # adds a new object
        sam_state.set_tracked(self._state, idx, frame, context.tracked)
        if mask is not None:
            result = self._predictor.add_new_mask(
                self._state, frame, obj_id, torch.from_numpy(mask)
            )
        if points is not None or box is not None:
            labels = None
            if points is not None:
                labels = np.asarray(prompt.labels or [1] * len(points), dtype=np.int32)
            with self._seeded(idx, frame, context.seed):
                result = self._predictor.add_new_points_or_box(
                    self._state,
                    frame,
                    obj_id,
                    points=points,
                    labels=labels,
                    clear_old_points=prompt.clear_old_points or box is not None,
                    normalize_coords=True,
                    box=None if box is None else box.reshape(-1),
                )
        _, obj_ids, video_res_masks = result
        out = sam_state.frame_output(self._state, obj_id, frame)
        score = torch.sigmoid(out["object_score_logits"].float()).item()
        return (video_res_masks[obj_ids.index(obj_id), 0] > 0).cpu().numpy(), score

    @contextlib.contextmanager
    def _seeded(self, obj_idx: int, frame: int, seed: RLE | None) -> Iterator[None]:
        """Hand SAM 2 ``seed`` as the object's previous mask logits on ``frame``."""
        if seed is None:
            yield
            return
        temp = self._state["temp_output_dict_per_obj"][obj_idx]["cond_frame_outputs"]
        temp[frame] = {"pred_masks": self._mask_logits(decode_mask(seed))}
        try:
            yield
        except BaseException:
            temp.pop(frame, None)
            raise

    def _mask_logits(self, mask: np.ndarray) -> torch.Tensor:
        """A frame-space bool mask as SAM 2 low-res mask logits [1, 1, S/4, S/4]."""
        size = self._predictor.image_size // 4
        prob = F.interpolate(
            torch.from_numpy(mask)[None, None].float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        logits = (prob * 2 - 1) * _SEED_LOGIT
        return logits.to(self._state["storage_device"])

    def _clear_prompts(self, frame: int, obj_id: int | None) -> None:
        """Model work of clearing prompts (executor thread): the masks those prompts made on
        the frame go with them, until a propagation computes the frame again."""
        for target in self._clear_in_model(frame, obj_id):
            self.masks.delete(obj_id=target, frame_index=frame)

    def _clear_in_model(self, frame: int, obj_id: int | None) -> list[int]:
        """Clear the prompts on ``frame`` in SAM 2's state; the objects that had some."""
        candidates = self._state["obj_ids"] if obj_id is None else [obj_id]
        targets = [o for o in candidates if frame in sam_state.prompt_frames(self._state, o)]
        for target in targets:
            self._predictor.clear_all_prompts_in_frame(
                self._state, frame, target, need_output=False
            )
        return targets

    def _replay(self, entry: dict[str, Any]) -> None:
        """One prompt-log entry applied to SAM 2's state only (executor thread)."""
        op = entry["op"]
        if op == "prompt":
            prompt = Prompt.model_validate(entry["prompt"])
            sam_state.settle(self._predictor, self._state)
            inputs = self._prompt_inputs(prompt)
            self._apply_prompt(prompt, prompt.obj_id, *inputs, _Context.logged(entry))
            self._meta.setdefault(prompt.obj_id, _ObjectMeta())
        elif op == "clear":
            self._clear_in_model(entry["frame_index"], entry["obj_id"])
        elif op == "remove_object":
            if entry["obj_id"] in self._state["obj_id_to_idx"]:
                self._predictor.remove_object(self._state, entry["obj_id"], need_output=False)
            self._meta.pop(entry["obj_id"], None)
        elif op == "reset":
            self._predictor.reset_state(self._state)
            self._meta.clear()
        else:
            raise InvalidRequestError(f"unknown prompt-log entry {op!r}")

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
        try:
            yield None
            began = time.perf_counter()
            self._run(lambda: sam_state.settle(self._predictor, self._state))
            for n, reverse in enumerate(plan.reverse_passes):
                skip = plan.start if n > 0 else None  # reported by the first pass
                yield from self._pass(plan, reverse, skip, progress, cancel)
                if cancel.is_set():
                    break
            yield PropagationDone(
                frames=progress.done_frames,
                elapsed_s=round(time.perf_counter() - began, 4),
                cancelled=cancel.is_set(),
            )
        finally:
            with self._lock:
                self._progress = None
                self._running = None

    def _pass(
        self,
        plan: _Plan,
        reverse: bool,
        skip: int | None,
        progress: PropagationProgress,
        cancel: threading.Event,
    ) -> Iterator[FrameMasks]:
        """One direction, pipelined by one frame: the model computes frame k+1 while frame k is
        encoded, stored and handed out. A frame in flight when the consumer leaves is still
        stored, so every computed mask lands in the MaskStore."""
        view = sam_state.object_view(self._state, plan.obj_ids)
        steps = self._predictor.propagate_in_video(
            view,
            start_frame_idx=plan.start,
            max_frame_num_to_track=plan.max_frames,
            reverse=reverse,
        )
        step, upcoming = self._step_fn(steps, view, plan, reverse)
        pending: Future[_StepResult | None] | None = self._submit(step, upcoming)
        try:
            while (result := pending.result()) is not None:
                pending = None if cancel.is_set() else self._submit(step, upcoming)
                event = self._record(result, plan)
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
        """One frame of SAM 2's propagation plus trimming its state (executor thread), and the
        frame the next step will run the image encoder on, for the ``EncoderBatcher``."""
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
            sam_state.trim(self._state, (frame, plan.start), self._window)
            scores = [
                torch.sigmoid(
                    sam_state.frame_output(self._state, o, frame)["object_score_logits"].float()
                ).item()
                for o in obj_ids
            ]
            return frame, list(obj_ids), (video_res_masks[:, 0] > 0).cpu().numpy(), scores

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
        frame, obj_ids, masks, scores = result
        sources: list[MaskSource] = [
            "prompt" if frame in plan.prompt_frames[o] else "propagation" for o in obj_ids
        ]
        self.masks.put(frame, encode_masks(obj_ids, masks, scores, sources, plan.propagation_id))
        return FrameMasks(frame_index=frame, masks=self.masks.frame(frame))


def _no_journal(entry: dict[str, Any]) -> None:
    """A session outside the session store (one-shot calls, the engine alone) logs nothing."""


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()

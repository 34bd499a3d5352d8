"""The seek-friendly copy: a short-GOP H.264 of a session's frames at the model's size.

A click on a frame never visited decodes the source from the keyframe before that frame: up to
a whole GOP of full-size frames (250 at 720p: a quarter to half a second on a CPU), more than a
click's model work at small image sizes or on a GPU. Where that worst read is costly
(``worth_copying``: the settings' ``seek_copy_min_mpixels``), the engine has this copy made in
the background once the session is ready: the selection's frames (cut and stride applied),
decoded straight to S x S as the model's reader decodes them, encoded with a keyframe every
``seek_copy_gop`` frames and no B-frames, so copy frame k is session frame k and any frame is
at most ``seek_copy_gop`` small frames from its keyframe. Meanwhile the session reads its
source; once the copy is complete the ``FrameSource`` moves its model-side reads to it (the
frame-space reader, for exports, overlays and frame JPEGs, stays on the source).

One ``SeekCopyWorker`` per engine makes the copies, one at a time, on a thread at the lowest
CPU priority (its encoder's and decoder's threads inherit it). A copy is written as
``seek_copy.mp4.<token>.part`` in the session directory and renamed ``seek_copy.mp4`` when
complete, so a replica that reopens the session uses a complete copy at once and starts an
incomplete one over.
The copy is lossy: the model sees the frames within the encoder's error (see CRF), so masks
computed from it differ slightly from those computed from the source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np

from deployments.engine.video import SessionVideo
from deployments.engine.video_source import (
    FrameReader,
    VideoIndex,
    VideoReader,
    VideoSelection,
    decode_selection,
    select_frames,
)
from deployments.protocol.settings import EngineSettings
from deployments.protocol.types import Preparation, VideoOptions

logger = logging.getLogger(__name__)

COPY_FILE = "seek_copy.mp4"
STAGE = "seek_copy"
# x264's rate factor, preset and pixel format, chosen by measurement (docs/benchmarks.md,
# "Sessions end to end"): at CRF 23 the 600-frame 1080p clip's copy at 1024 takes 32 KB a
# frame (CRF 18: 61 KB, past the 43 KiB issue 9 allows beyond source and masks) at 38-39 dB
# PSNR against the frames the model reads from the source; veryfast's files are half the size
# of ultrafast's for up to 1.7x the time; at S x S, 4:4:4 is 0.5-1.7 dB better than 4:2:0 at
# the same size (4:2:0 would halve again the chroma the model sees from the source).
CRF = 23
PRESET = "veryfast"
PIX_FMT = "yuv444p"
# The copy's nominal frame rate when the session's is unusable (its frames are found by
# position, never by time).
_DEFAULT_RATE = Fraction(30)

State = Literal["queued", "building", "ready", "failed", "cancelled"]


class ModelFrames(Protocol):
    """What a finished copy is handed to: the session, whose model reads move to it."""

    def switch_model_frames(self, open_reader: Callable[[], FrameReader]) -> None: ...


def worst_seek_mpixels(index: VideoIndex, selection: VideoSelection) -> float:
    """Megapixels decoded to read the selection's costliest frame from its source: the frames
    from the keyframe before it to it, times the source's frame size."""
    positions = selection.first + selection.stride * np.arange(selection.num_frames)
    slots = np.searchsorted(index.keyframes, positions, side="right") - 1
    keyframes = np.where(slots >= 0, index.keyframes[np.maximum(slots, 0)], 0)
    frames = int(np.max(positions - keyframes)) + 1
    return frames * index.width * index.height / 1e6


def worth_copying(video: SessionVideo, settings: EngineSettings) -> bool:
    """Whether a session on ``video`` should get a seek-friendly copy: copies are on
    (``seek_copy_gop`` > 0), the session has more frames than one GOP of the copy, and its
    costliest read from the source decodes more than ``seek_copy_min_mpixels``."""
    gop = settings.seek_copy_gop
    if gop <= 0 or video.selection.num_frames <= gop:
        return False
    return worst_seek_mpixels(video.index, video.selection) > settings.seek_copy_min_mpixels


class SeekCopy:
    """One session's copy: where it is, how far it got, and the reader over it once complete.

    ``build`` runs on the ``SeekCopyWorker``; ``progress`` and ``cancel`` from any thread.
    """

    def __init__(
        self,
        directory: Path,
        video: SessionVideo,
        image_size: int,
        gop: int,
        buffer_bytes: int,
    ) -> None:
        self.path = directory / COPY_FILE
        # Named for this writer: a replica that still makes a copy of a session rebuilt
        # elsewhere never writes into the new owner's file (whichever finishes renames first).
        self.partial = directory / f"{COPY_FILE}.{secrets.token_hex(4)}.part"
        self.video = video
        self.image_size = image_size
        self.gop = gop
        self.buffer_bytes = buffer_bytes
        self.total_frames = video.selection.num_frames
        self.done_frames = 0
        self.state: State = "queued"
        self._cancel = threading.Event()
        self._target: ModelFrames | None = None
        # The worker that builds it (set when submitted), so that ``cancel`` can wait for it.
        self._worker: SeekCopyWorker | None = None

    # ---- for the session ------------------------------------------------------------------------

    def progress(self) -> Preparation | None:
        """What ``GET /sessions/{id}`` reports: the frames copied while it is queued or being
        made; None once ready, failed or cancelled."""
        if self.state not in ("queued", "building"):
            return None
        return Preparation(
            stage=STAGE, done_frames=self.done_frames, total_frames=self.total_frames
        )

    def cancel(self) -> None:
        """Stop making the copy and wait until the worker has left it (its ``.part`` removed),
        so the session's directory can go. A complete copy stays."""
        self._cancel.set()
        if self._worker is not None:
            self._worker.cancel(self)
        if self.state in ("queued", "building"):
            self.state = "cancelled"

    # ---- opening ----------------------------------------------------------------------------

    def open_complete(self) -> VideoReader | None:
        """A model-side reader over the copy when a complete, valid one is in the directory
        (a replica reopening the session); None otherwise, with an unusable copy and any
        ``.part`` left by a replica that died removed, so ``build`` starts over."""
        for partial in self.path.parent.glob(f"{COPY_FILE}.*.part"):
            partial.unlink(missing_ok=True)
        if not self.path.exists():
            return None
        try:
            reader = self.reader(self._index())
        except Exception:
            logger.warning("the seek-friendly copy %s is unusable; making it again", self.path)
            self.path.unlink(missing_ok=True)
            return None
        self.state = "ready"
        return reader

    def reader(self, index: VideoIndex) -> VideoReader:
        """A reader of the copy's frames at S x S (decoded as they were written)."""
        selection = select_frames(index, VideoOptions(), max_frames=index.num_frames)
        size = (self.image_size, self.image_size)
        return VideoReader(self.path, index, selection, buffer_bytes=self.buffer_bytes, size=size)

    def _index(self) -> VideoIndex:
        """The complete copy's index; ValueError unless it holds the session's frames."""
        index = VideoIndex.build(self.path)
        size = (index.width, index.height)
        if index.num_frames != self.total_frames or size != (self.image_size,) * 2:
            raise ValueError(
                f"{self.path} holds {index.num_frames} frames of {size}, not "
                f"{self.total_frames} of {self.image_size}x{self.image_size}"
            )
        return index

    # ---- building (the worker's thread) -------------------------------------------------------

    def build(self) -> None:
        """Write the copy, rename it complete and move the session's model reads to it.

        Never raises: a failure (the source changed or is corrupt, the disk is full) is logged
        and the session keeps reading its source; a cancelled copy leaves no file.
        """
        cancelled = self._cancel.is_set
        if cancelled():
            return
        self.state = "building"

        def progress(done: int) -> None:
            self.done_frames = done

        try:
            encode_copy(self.video, self.image_size, self.gop, self.partial, cancelled, progress)
            if cancelled():
                raise _Cancelled
            self.video.index.check_source(self.video.source)  # not changed meanwhile
            self.partial.replace(self.path)
            index = self._index()
            if self._target is not None:
                self._target.switch_model_frames(lambda: self.reader(index))
            self.state = "ready"
        except _Cancelled:
            self.state = "cancelled"
        except Exception:
            logger.exception(
                "the seek-friendly copy of %s failed; frames come from the source",
                self.video.source.name,
            )
            self.state = "failed"
            self.path.unlink(missing_ok=True)
        finally:
            self.partial.unlink(missing_ok=True)


def encode_copy(
    video: SessionVideo,
    side: int,
    gop: int,
    path: Path,
    cancelled: Callable[[], bool] = lambda: False,
    progress: Callable[[int], None] = lambda done: None,
    *,
    crf: int = CRF,
    preset: str = PRESET,
    pix_fmt: str = PIX_FMT,
) -> None:
    """Write the session's frames (its selection of the source) as an MP4 at ``path``: H.264 at
    ``side`` x ``side``, a keyframe every ``gop`` frames, no B-frames, frame k at pts k.
    ``progress`` hears the frames done; stops early (the file incomplete) once
    ``cancelled()``."""
    rate = _rate(video.selection.info.fps)
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(
            "libx264", rate=rate, options={"preset": preset, "crf": str(crf), "x264-params": params}
        )
        stream.width = stream.height = side
        stream.pix_fmt = pix_fmt
        frames = decode_selection(
            video.source, video.index, video.selection, (side, side), cancelled
        )
        for k, rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = k, 1 / rate
            out.mux(stream.encode(frame))
            progress(k + 1)
        if not cancelled():
            out.mux(stream.encode())


class _Cancelled(Exception):
    pass


def _rate(fps: float) -> Fraction:
    if not np.isfinite(fps) or fps <= 0:
        return _DEFAULT_RATE
    return Fraction(fps).limit_denominator(1001) or _DEFAULT_RATE


class SeekCopyWorker:
    """One thread per engine that makes the sessions' copies one at a time, first come first
    served, at the lowest CPU priority: the model's work and the sessions' reads go first."""

    def __init__(self) -> None:
        self._jobs: deque[SeekCopy] = deque()
        self._current: SeekCopy | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, copy: SeekCopy, target: ModelFrames) -> None:
        """Queue ``copy``; once made, ``target`` reads the model's frames from it."""
        with self._cond:
            if self._closed:
                copy.state = "cancelled"
                return
            copy._target, copy._worker = target, self
            self._jobs.append(copy)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="seek-copy", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """A copy is queued or being made."""
        with self._cond:
            return self._current is not None or bool(self._jobs)

    def cancel(self, copy: SeekCopy) -> None:
        """Take ``copy`` off the queue, or wait until the worker has stopped making it."""
        with self._cond:
            with contextlib.suppress(ValueError):
                self._jobs.remove(copy)
            while self._current is copy:
                self._cond.wait()

    def close(self) -> None:
        """Cancel every copy and stop the thread."""
        with self._cond:
            self._closed = True
            for copy in [*self._jobs, self._current]:
                if copy is not None:
                    copy._cancel.set()
            self._jobs.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        _lowest_priority()
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._current = self._jobs.popleft()
            try:
                self._current.build()
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()


def _lowest_priority() -> None:
    """Nice 19 for the calling thread (Linux sets it per thread; threads it starts inherit
    it). Where that is not possible the copy runs at normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        logger.warning("could not lower the seek-friendly copy's CPU priority")

"""``VideoReader``: a session's frames decoded from the source on demand (issue 9), on a worker
thread that follows the walk: sequentially with read-ahead forward, GOP segment by GOP segment
served in reverse backward, from the nearest keyframe after a jump. ``FrameReader`` is what a
session reads its frames through, a video's (this reader) or a still image's
(``still_image.ImageReader``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deployments.engine.decoder import Decoder
from deployments.engine.video_index import VideoIndex, VideoSource
from deployments.engine.video_selection import VideoSelection
from deployments.protocol.errors import (
    BadVideoError,
    EngineError,
    ObjectStoreUnavailableError,
    SourceChangedError,
)
from deployments.protocol.settings import EngineSettings

# Frames decoded ahead of a forward walk: enough to hide the decoder's jitter behind the
# model's step, few enough to be cheap when the walk stops.
_AHEAD = 8
# A reader's buffer when its caller names none (tests, scripts): the frame_buffer_mb default.
DEFAULT_BUFFER_BYTES = EngineSettings.model_fields["frame_buffer_mb"].default * 2**20


class FrameReader(Protocol):
    """What a session reads its frames through, for a video or a still image."""

    @property
    def num_frames(self) -> int: ...

    def frame(self, k: int) -> np.ndarray:
        """Session frame ``k`` as a read-only RGB uint8 array; IndexError outside the video."""
        ...

    def prefetch(self, k: int) -> None:
        """Hint: frame ``k`` will be read soon."""
        ...

    def buffer_nbytes(self) -> int:
        """Bytes of decoded frames held now."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Job:
    """Session frames for the worker to decode (ascending); an urgent job has a caller waiting
    and is never cancelled."""

    frames: list[int]
    urgent: bool


class VideoReader:
    """The selection's frames, decoded from the source on demand. Thread-safe.

    One worker thread owns the decoder and follows the access pattern it sees in ``frame`` and
    ``prefetch`` calls: a forward walk (k, k+1, ...) keeps it ``_AHEAD`` frames ahead; a
    backward walk decodes from the keyframe before, one segment of at most half the buffer at a
    time (a long GOP is re-decoded from its keyframe per segment), serves it in reverse and
    decodes the previous segment meanwhile; a jump decodes just that frame, from the nearest
    keyframe before it. Decoded frames are kept at the output size and only while the
    walk needs them: at most ``buffer_bytes`` (two frames at least), besides frames callers
    are waiting for.
    """

    def __init__(
        self,
        source: VideoSource,
        index: VideoIndex,
        selection: VideoSelection,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        size: tuple[int, int] | None = None,
    ) -> None:
        """``size`` (w, h) overrides the selection's size, e.g. the model's square input: swscale
        then converts and resizes in one pass. Raises SourceChangedError when ``source`` is not
        the file ``index`` describes."""
        index.check_source(source)
        self._source = source
        self._index = index
        self._selection = selection
        width, height = size or (selection.width, selection.height)
        self._decoder = Decoder(source, index, (width, height))
        capacity = max(2, buffer_bytes // (width * height * 3))
        self._segment = capacity // 2
        self._ahead = min(_AHEAD, capacity - 1)
        self._frames: dict[int, np.ndarray] = {}
        self._errors: dict[int, EngineError] = {}
        self._waiting: Counter[int] = Counter()
        self._cursor: int | None = None
        self._direction = 0
        self._job: _Job | None = None
        self._cancel = False
        self._closed = False
        self._failure: Exception | None = None  # what stopped the worker, if it failed
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="video-reader", daemon=True)
        self._worker.start()

    @property
    def num_frames(self) -> int:
        return self._selection.num_frames

    def frame(self, k: int) -> np.ndarray:
        """Session frame ``k`` as a read-only RGB uint8 array (height, width, 3).

        Raises IndexError outside the selection, BadVideoError when the frame cannot be decoded
        (a truncated or corrupt file), SourceChangedError when the file changed since it was
        indexed (checked before each decode), ObjectStoreUnavailableError when an object's store
        fails (a later read tries again).
        """
        self._check(k)
        with self._cond:
            self._note(k)
            self._waiting[k] += 1
            try:
                return self._wait_for(k)
            finally:
                self._waiting[k] -= 1
                if not self._waiting[k]:
                    del self._waiting[k]
                self._cond.notify_all()

    def prefetch(self, k: int) -> None:
        """Hint that frame ``k`` comes next: the worker decodes it (and what follows it in the
        walk's direction) without anyone waiting. Ignored outside the selection."""
        if 0 <= k < self.num_frames:
            with self._cond:
                self._note(k)

    def buffer_nbytes(self) -> int:
        """Bytes of decoded frames held now."""
        with self._cond:
            return sum(array.nbytes for array in self._frames.values())

    def close(self) -> None:
        """Stop the worker, close the file and drop the decoded frames (now, not when the reader
        goes, so that the memory a deleted session frees can be trimmed at once: host_memory);
        later reads raise RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join()
        with self._cond:
            self._frames.clear()
            self._errors.clear()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, k: int) -> None:
        if not 0 <= k < self.num_frames:
            raise IndexError(f"frame {k} is outside the video's {self.num_frames} frames")

    def _wait_for(self, k: int) -> np.ndarray:
        while True:
            if self._closed:
                raise RuntimeError("the video reader is closed")
            if self._failure is not None:
                raise RuntimeError("the video reader's worker failed") from self._failure
            if k in self._frames:
                return self._frames[k]
            if k in self._errors:
                raise self._errors.pop(k)
            if self._job is not None and not self._job.urgent and k not in self._job.frames:
                self._cancel = True
            self._cond.wait()

    def _note(self, k: int) -> None:
        """Follow the access pattern: a step of one sets the direction, a jump clears it."""
        if self._cursor is not None and k != self._cursor:
            step = k - self._cursor
            self._direction = step if step in (1, -1) else 0
        self._cursor = k
        self._evict()
        self._cond.notify_all()

    # -- worker --

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and (job := self._plan()) is None:
                        self._cond.wait()
                    if self._closed:
                        return
                    self._job, self._cancel = job, False
                self._execute(job)
        except Exception as exc:  # a bug, not a bad file: fail every read rather than hang
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
        finally:
            self._decoder.close()

    def _plan(self) -> _Job | None:
        """A waited-for frame first (oldest wait first), then the cursor, then read-ahead."""
        for k in self._waiting:
            if self._missing(k):
                return _Job(self._window(k), urgent=True)
        k = self._cursor
        if k is None:
            return None
        if self._missing(k):
            return _Job(self._window(k), urgent=False)
        ahead = self._read_ahead(k)
        return _Job(ahead, urgent=False) if ahead else None

    def _missing(self, k: int) -> bool:
        return k not in self._frames and k not in self._errors

    def _window(self, k: int) -> list[int]:
        """What to decode for a missing frame ``k``, given the walk's direction."""
        if self._direction == 1:
            frames: Sequence[int] = range(k, min(self.num_frames, k + self._ahead + 1))
        elif self._direction == -1:
            frames = self._segment_of(k)
        else:
            frames = [k]
        return [i for i in frames if self._missing(i)]

    def _read_ahead(self, k: int) -> list[int]:
        if self._direction == 1:
            frames: Sequence[int] = range(k + 1, min(self.num_frames, k + 1 + self._ahead))
        elif self._direction == -1:
            low = k
            while low - 1 in self._frames:
                low -= 1
            if low == 0 or k - low >= self._segment:
                return []
            frames = self._segment_of(low - 1)
        else:
            return []
        return [i for i in frames if self._missing(i)]

    def _segment_of(self, k: int) -> range:
        """Frames ending at ``k`` that one decode from the keyframe before ``k`` yields: at most
        a segment, never reaching into the previous GOP."""
        sel = self._selection
        slot = self._index.keyframe_slot(sel.source_frame(k))
        keyframe = int(self._index.keyframes[slot]) if slot >= 0 else 0
        gop_start = max(0, -(-(keyframe - sel.first) // sel.stride))
        return range(max(gop_start, k - self._segment + 1), k + 1)

    def _execute(self, job: _Job) -> None:
        sel = self._selection
        positions = [sel.source_frame(k) for k in job.frames]
        try:
            self._index.check_source(self._source)
            for position, array in self._decoder.read(positions, self._cancelled):
                array.flags.writeable = False
                with self._cond:
                    self._store((position - sel.first) // sel.stride, array)
        except (BadVideoError, SourceChangedError) as exc:
            with self._cond:
                self._errors.update((k, exc) for k in job.frames if k not in self._frames)
        except ObjectStoreUnavailableError as exc:
            # Passing: answer those waiting, remember nothing, and read nothing in the
            # background until the next call (no retry loop against a store that is down).
            with self._cond:
                self._errors.update((k, exc) for k in job.frames if k in self._waiting)
                self._cursor = None
        finally:
            with self._cond:
                self._job = None
                self._cond.notify_all()

    def _cancelled(self) -> bool:
        return self._cancel or self._closed

    def _store(self, k: int, array: np.ndarray) -> None:
        self._frames[k] = array
        self._cond.notify_all()
        self._evict()

    def _evict(self) -> None:
        """Drop the frames the walk no longer needs, unless a caller waits for them."""
        for k in [k for k in self._frames if not self._needed(k) and k not in self._waiting]:
            del self._frames[k]

    def _needed(self, k: int) -> bool:
        """Inside the walk's window: the frames ahead of a forward walk, the two segments below
        a backward one, the frame last asked for after a jump."""
        cursor = self._cursor if self._cursor is not None else k
        if self._direction == 1:
            return cursor <= k <= cursor + self._ahead
        if self._direction == -1:
            return cursor - 2 * self._segment < k <= cursor
        return k == cursor

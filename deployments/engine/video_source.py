"""Frames on demand from the source video, instead of a JPEG copy of every frame (issue 9).

A session indexes its video once, by demuxing the packets without decoding them
(``VideoIndex``: every frame's timestamp and the keyframes, exact for variable frame rates and
whatever the header claims), and keeps the index next to its masks so another replica reopens
it without demuxing again. ``select_frames`` applies the session's cut, stride and size to the
index; ``VideoReader`` then decodes the frames SAM 2 asks for: sequentially on a read-ahead
thread when it walks forward or backward, from the nearest keyframe when it jumps.

A still image is a one-frame video: ``write_image`` keeps it as a PNG and ``ImageReader``
serves it through the same ``FrameReader`` interface.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from deployments.protocol.errors import (
    BadImageError,
    BadVideoError,
    EngineError,
    InvalidRequestError,
    SourceChangedError,
    VideoTooLargeError,
)
from deployments.protocol.types import SourceVideo, VideoInfo, VideoOptions

INDEX_VERSION = 1
# Slack when comparing a requested time with frame timestamps (as video.py): a cut at a
# frame's time keeps that frame despite float rounding.
_TIME_EPS = 1e-6
# Frames decoded ahead of a forward walk: enough to hide the decoder's jitter behind the
# model's step, few enough to be cheap when the walk stops.
_AHEAD = 8
# Keyframes to step back when a seek lands after its target (demuxers that seek by decode
# time or to the next keyframe) before decoding from the start of the file instead.
_SEEK_RETRIES = 2
DEFAULT_BUFFER_BYTES = 256 * 2**20


# ---- index ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoIndex:
    """Every frame of the video stream, in presentation order, from its packets.

    ``pts`` holds each frame's timestamp (sorted, in ``time_base`` units); ``keyframes`` the
    positions in ``pts`` of the frames a decoder can start from, and ``keyframe_dts`` their
    decode timestamps (some demuxers seek by those).
    """

    pts: np.ndarray
    keyframes: np.ndarray
    keyframe_dts: np.ndarray
    end_pts: int
    time_base: Fraction
    width: int
    height: int
    source_size: int
    source_mtime_ns: int

    @classmethod
    def build(cls, source: Path) -> VideoIndex:
        """Demux ``source`` (no decoding). Raises BadVideoError for a file that is not a video,
        has no video stream or no frames, or whose packets carry no timestamps."""
        stat = source.stat()
        with _open(source) as container:
            stream = _video_stream(container)
            packets = _demux(container, stream)
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
            time_base = stream.time_base
        if not packets.pts:
            raise BadVideoError("the video has no frames")
        if width <= 0 or height <= 0:
            raise BadVideoError("the video reports no frame size; it may be corrupt")
        return cls._from_packets(packets, time_base, rate, width, height, stat)

    @classmethod
    def _from_packets(
        cls,
        packets: _Packets,
        time_base: Fraction,
        rate: Fraction | None,
        width: int,
        height: int,
        stat: os.stat_result,
    ) -> VideoIndex:
        pts = np.array(packets.pts, np.int64)
        order = np.argsort(pts, kind="stable")
        pts = pts[order]
        if np.any(np.diff(pts) == 0):
            raise BadVideoError("two frames of the video share a timestamp; remux it")
        key = np.array(packets.key, bool)[order]
        dts = np.array(packets.dts, np.int64)[order]
        last = int(np.array(packets.duration, np.int64)[order][-1])
        return cls(
            pts=pts,
            keyframes=np.flatnonzero(key),
            keyframe_dts=dts[key],
            end_pts=int(pts[-1]) + (last if last > 0 else _frame_ticks(pts, rate, time_base)),
            time_base=time_base,
            width=width,
            height=height,
            source_size=stat.st_size,
            source_mtime_ns=stat.st_mtime_ns,
        )

    def save(self, path: Path) -> None:
        """Write the index as a compressed ``.npz``, atomically (replicas may read it)."""
        partial = path.with_name(path.name + ".partial")
        meta = [
            INDEX_VERSION,
            self.end_pts,
            self.time_base.numerator,
            self.time_base.denominator,
            self.width,
            self.height,
            self.source_size,
            self.source_mtime_ns,
        ]
        with partial.open("wb") as file:
            np.savez_compressed(
                file,
                pts_delta=np.diff(self.pts, prepend=0),
                keyframes=self.keyframes,
                keyframe_dts=self.keyframe_dts,
                meta=np.array(meta, np.int64),
            )
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> VideoIndex:
        """Read a saved index; ValueError for one of another version (build it again)."""
        with np.load(path, allow_pickle=False) as data:
            version, end, num, den, width, height, size, mtime = (int(v) for v in data["meta"])
            if version != INDEX_VERSION:
                raise ValueError(f"{path} holds a version {version} index, not {INDEX_VERSION}")
            return cls(
                pts=np.cumsum(data["pts_delta"]),
                keyframes=data["keyframes"],
                keyframe_dts=data["keyframe_dts"],
                end_pts=end,
                time_base=Fraction(num, den),
                width=width,
                height=height,
                source_size=size,
                source_mtime_ns=mtime,
            )

    def check_source(self, source: Path) -> None:
        """Raise SourceChangedError when ``source`` is gone or is not the file indexed (size or
        mtime changed): frames read from it would not be the session's."""
        check_source(source, self.source_size, self.source_mtime_ns)

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def duration_s(self) -> float:
        return float((self.end_pts - self.pts[0]) * self.time_base)

    @property
    def fps(self) -> float:
        """Average frame rate: frames over duration (exact for a constant rate)."""
        return self.num_frames / self.duration_s

    @cached_property
    def times(self) -> np.ndarray:
        """Seconds from the first frame to each frame, plus the end of the last one."""
        ticks = np.append(self.pts, self.end_pts) - self.pts[0]
        return ticks * (self.time_base.numerator / self.time_base.denominator)

    def source_video(self) -> SourceVideo:
        return SourceVideo(
            width=self.width,
            height=self.height,
            fps=self.fps,
            num_frames=self.num_frames,
            duration_s=self.duration_s,
        )

    def position(self, pts: int) -> int | None:
        """Presentation position of the frame with this timestamp; None if there is none."""
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None

    def keyframe_slot(self, position: int) -> int:
        """Slot in ``keyframes`` of the last keyframe at or before ``position`` (-1: none)."""
        return int(np.searchsorted(self.keyframes, position, side="right")) - 1


def check_source(source: Path, size: int, mtime_ns: int) -> None:
    """Raise SourceChangedError unless ``source`` still has this size and mtime."""
    try:
        stat = source.stat()
    except FileNotFoundError:
        raise SourceChangedError(
            f"the video {source.name} was removed after the session was created"
        ) from None
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
        raise SourceChangedError(
            f"the video {source.name} changed after the session was created; create a new "
            "session on it",
            size=stat.st_size,
            expected_size=size,
        )


@dataclass
class _Packets:
    pts: list[int]
    dts: list[int]
    key: list[bool]
    duration: list[int]


def _open(source: Path) -> av.container.InputContainer:
    try:
        return av.open(str(source))
    except av.FFmpegError as exc:
        raise BadVideoError(
            "the upload is not a video PyAV can read (unknown format, or a truncated file)"
        ) from exc


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise BadVideoError("the file has no video stream")


def _demux(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _Packets:
    """Timestamps, keyframe flags and durations of the stream's packets, in decode order.

    Skips empty packets (the demuxer's end marker) and those marked discard (frames before an
    edit list's start, which the decoder drops). A packet without a pts falls back to its dts
    (streams without reordering); one with neither is refused: its frame cannot be found again.
    """
    packets = _Packets([], [], [], [])
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            pts, dts = packet.pts, packet.dts
            if pts is None and dts is None:
                raise BadVideoError(
                    "the video's packets carry no timestamps (a raw stream?); remux it into "
                    "MP4 or MKV"
                )
            packets.pts.append(pts if pts is not None else dts)
            packets.dts.append(dts if dts is not None else pts)
            packets.key.append(packet.is_keyframe)
            packets.duration.append(packet.duration or 0)
    except av.FFmpegError as exc:
        raise BadVideoError(f"the video is truncated or corrupt: {exc}") from exc
    return packets


def _frame_ticks(pts: np.ndarray, rate: Fraction | None, time_base: Fraction) -> int:
    """Duration of the last frame when its packet has none: the typical frame interval."""
    if len(pts) > 1:
        return int(np.median(np.diff(pts)))
    return max(1, round(1 / (rate * time_base))) if rate else max(1, round(1 / time_base))


# ---- selection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSelection:
    """The session's frames: session frame k is source frame ``first + k * stride``, shown at
    ``width`` x ``height``. ``info`` describes it as the session reports it."""

    first: int
    stride: int
    num_frames: int
    width: int
    height: int
    info: VideoInfo

    def source_frame(self, k: int) -> int:
        return self.first + k * self.stride


def select_frames(
    index: VideoIndex,
    options: VideoOptions,
    *,
    max_frames: int,
    max_seconds: float = math.inf,
) -> VideoSelection:
    """Cut (by timestamp, so exact for variable frame rates), stride and shrink the video.

    Raises InvalidRequestError for a cut that selects no frame and VideoTooLargeError for more
    than ``max_frames`` frames or a cut longer than ``max_seconds``.
    """
    times, n = index.times, index.num_frames
    start = options.start_time or 0.0
    first = int(np.searchsorted(times[:n], start - _TIME_EPS))
    if first >= n:
        raise InvalidRequestError(
            f"start_time {start}s is past the end of the video ({index.duration_s:.2f}s)"
        )
    end = options.end_time
    stop = n if end is None else int(np.searchsorted(times[:n], end - _TIME_EPS))
    _check_seconds(float(times[stop] - times[first]), max_seconds)
    count = max(0, math.ceil((stop - first) / options.frame_stride))
    if count == 0:
        raise InvalidRequestError(f"no frame lies between start_time {start}s and end_time {end}s")
    if count > max_frames:
        raise VideoTooLargeError(
            f"the video has more than {max_frames} frames; cut it with start_time/end_time or "
            "thin it with frame_stride",
            max_frames=max_frames,
        )
    width, height = target_size(index.width, index.height, options.max_side)
    info = VideoInfo(
        num_frames=count,
        fps=index.fps / options.frame_stride,
        width=width,
        height=height,
        start_time=float(times[first]),
        end_time=float(times[min(stop, first + count * options.frame_stride)]),
        frame_stride=options.frame_stride,
        source=index.source_video(),
    )
    return VideoSelection(first, options.frame_stride, count, width, height, info)


def _check_seconds(seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise VideoTooLargeError(
            f"the selected video is {seconds:.0f}s long, more than {max_seconds:.0f}s; cut it "
            "with start_time/end_time",
            max_seconds=max_seconds,
        )


def target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) shrunk so the longer side fits ``max_side``; never upscaled."""
    longer = max(width, height)
    if max_side is None or longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(
    frame: av.VideoFrame, size: tuple[int, int], reformatter: VideoReformatter | None = None
) -> np.ndarray:
    """A decoded frame as RGB uint8 at ``size``: swscale converts and shrinks in one pass
    (area filter, like OpenCV's INTER_AREA), faster than converting then resizing with cv2."""
    width, height = size
    rgb = (reformatter or VideoReformatter()).reformat(
        frame, width=width, height=height, format="rgb24", interpolation=Interpolation.AREA
    )
    return rgb.to_ndarray()


# ---- readers ----------------------------------------------------------------------------------


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
        source: Path,
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
        self._decoder = _Decoder(source, index, (width, height))
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
        indexed (checked before each decode).
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
        """Stop the worker and close the file; later reads raise RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join()

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


class _Decoder:
    """The source's container and decoder, positioned where the last read stopped. Used by one
    thread at a time (the reader's worker)."""

    def __init__(self, source: Path, index: VideoIndex, size: tuple[int, int]) -> None:
        self._source = source
        self._index = index
        self._size = size
        self._reformatter = VideoReformatter()
        self._by_dts = False  # learnt from a seek: this demuxer seeks by decode timestamps
        self._open()

    def _open(self) -> None:
        self._container = _open(self._source)
        self._stream = _video_stream(self._container)
        self._stream.thread_type = "AUTO"
        self._frames = self._decoded()
        self._pending: tuple[int, av.VideoFrame] | None = None
        self._next: int | None = 0  # position the decoder yields next; None: unknown

    def close(self) -> None:
        self._container.close()

    def read(
        self, positions: Sequence[int], cancelled: Callable[[], bool]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield the frames at ``positions`` (ascending presentation positions) as RGB arrays,
        until done or ``cancelled()``. Raises BadVideoError for a frame it cannot decode."""
        try:
            yield from self._read(positions, cancelled)
        except av.FFmpegError as exc:
            self._next = None
            raise BadVideoError(f"the video is corrupt: {exc}") from exc
        except BadVideoError:
            self._next = None
            raise

    def _read(
        self, positions: Sequence[int], cancelled: Callable[[], bool]
    ) -> Iterator[tuple[int, np.ndarray]]:
        for want in positions:
            if not self._can_continue_to(want):
                self._seek(want)
            while True:
                if cancelled():
                    return
                position, frame = self._next_frame(want)
                if position == want:
                    break
                if position > want:
                    raise BadVideoError(f"frame {want} of the video could not be decoded")
            yield want, to_rgb(frame, self._size, self._reformatter)

    def _can_continue_to(self, position: int) -> bool:
        """Decoding on reaches ``position`` without passing a keyframe a seek could start at."""
        if self._next is None or self._next > position:
            return False
        slot = self._index.keyframe_slot(position)
        return slot < 0 or int(self._index.keyframes[slot]) <= self._next

    def _next_frame(self, want: int) -> tuple[int, av.VideoFrame]:
        item, self._pending = self._pending, None
        item = item or next(self._frames, None)
        if item is None:
            self._next = None
            raise BadVideoError(f"the video ended before frame {want}: truncated or corrupt")
        self._next = item[0] + 1
        return item

    def _decoded(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames with their positions; frames the index does not list are skipped."""
        for frame in self._container.decode(self._stream):
            stamp = frame.pts if frame.pts is not None else frame.dts
            position = None if stamp is None else self._index.position(stamp)
            if position is not None:
                yield position, frame

    def _seek(self, target: int) -> None:
        """Position the decoder at or before ``target``, at the keyframe before it.

        A seek that lands after ``target`` (an MPEG-TS demuxer seeks by decode time, others
        land on the next keyframe) is retried by dts, then from earlier keyframes, and finally
        from the start of the file.
        """
        slot = self._index.keyframe_slot(target)
        for earlier in range(slot, max(slot - _SEEK_RETRIES, 0) - 1, -1):
            for stamp, by_dts in self._seek_stamps(earlier):
                if self._seek_lands(stamp, target):
                    self._by_dts = by_dts
                    return
        self._container.close()
        self._open()

    def _seek_stamps(self, slot: int) -> list[tuple[int, bool]]:
        pts = int(self._index.pts[self._index.keyframes[slot]])
        dts = int(self._index.keyframe_dts[slot])
        if dts == pts:
            return [(pts, False)]
        stamps = [(pts, False), (dts, True)]
        return stamps[::-1] if self._by_dts else stamps

    def _seek_lands(self, stamp: int, target: int) -> bool:
        self._container.seek(stamp, stream=self._stream, backward=True)
        self._frames = self._decoded()
        self._pending = next(self._frames, None)
        self._next = None if self._pending is None else self._pending[0]
        return self._next is not None and self._next <= target


def write_image(image_rgb: np.ndarray, path: Path) -> VideoInfo:
    """Store one image as a one-frame video (image segmentation runs as a one-frame session):
    a PNG, lossless, so the frame served back is the image received."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.size == 0:
        raise BadImageError("the image must have three colour channels")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise BadImageError(f"could not store the image as {path.name}")
    height, width = image_rgb.shape[:2]
    source = SourceVideo(width=width, height=height, fps=1.0, num_frames=1, duration_s=1.0)
    return VideoInfo(
        num_frames=1,
        fps=1.0,
        width=width,
        height=height,
        start_time=0.0,
        end_time=1.0,
        frame_stride=1,
        source=source,
    )


class ImageReader:
    """The image ``write_image`` stored, as a one-frame ``FrameReader``. Thread-safe."""

    num_frames = 1

    def __init__(self, path: Path) -> None:
        self._path = path
        self._image: np.ndarray | None = None
        self._lock = threading.Lock()

    def frame(self, k: int) -> np.ndarray:
        """The image (read once, then kept) as a read-only RGB uint8 array."""
        if k != 0:
            raise IndexError(f"frame {k} is outside a one-frame image")
        with self._lock:
            if self._image is None:
                self._image = self._load()
            return self._image

    def prefetch(self, k: int) -> None:
        """Nothing to read ahead: the one frame is read on first use."""

    def buffer_nbytes(self) -> int:
        with self._lock:
            return 0 if self._image is None else self._image.nbytes

    def close(self) -> None:
        with self._lock:
            self._image = None

    def _load(self) -> np.ndarray:
        bgr = cv2.imread(str(self._path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BadImageError(f"the session's image {self._path.name} is missing or unreadable")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False
        return rgb

"""Decoding the frames at given positions of a video, by seeking to the keyframe before each
run of them, and converting them to RGB at the size asked for (swscale, one pass)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from deployments.engine.video_index import VideoIndex, VideoSource, open_container, video_stream
from deployments.protocol.errors import BadVideoError, ObjectStoreUnavailableError

# Keyframes to step back when a seek lands after its target (demuxers that seek by decode
# time or to the next keyframe) before decoding from the start of the file instead.
_SEEK_RETRIES = 2


class Decoder:
    """The source's container and decoder, positioned where the last read stopped. Used by one
    thread at a time (the reader's worker)."""

    def __init__(self, source: VideoSource, index: VideoIndex, size: tuple[int, int]) -> None:
        self._source = source
        self._index = index
        self._size = size
        self._reformatter = VideoReformatter()
        self._by_dts = False  # learnt from a seek: this demuxer seeks by decode timestamps
        self._broken = False  # an object store failed under the container: reopen it first
        self._open()

    def _open(self) -> None:
        self._container = open_container(self._source)
        self._stream = video_stream(self._container)
        self._stream.thread_type = "AUTO"
        self._frames = _decoded(self._container, self._stream, self._index)
        self._pending: tuple[int, av.VideoFrame] | None = None
        self._next: int | None = 0  # position the decoder yields next; None: unknown

    def close(self) -> None:
        """Close the decoding generator (it holds the codec's frames and buffer pools) and the
        file, now rather than when the reader that owns this goes."""
        self._frames.close()
        self._pending = None
        self._container.close()

    def read(
        self, positions: Sequence[int], cancelled: Callable[[], bool]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield the frames at ``positions`` (ascending presentation positions) as RGB arrays,
        until done or ``cancelled()``. Raises BadVideoError for a frame it cannot decode and
        ObjectStoreUnavailableError when an object's store fails; the next read reopens the source
        (PyAV's container is unusable after a failed read callback)."""
        try:
            if self._broken:
                self._frames.close()
                self._container.close()
                self._open()
                self._broken = False
            yield from self._read(positions, cancelled)
        except ObjectStoreUnavailableError:
            self._broken = True
            raise
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
        self._frames = _decoded(self._container, self._stream, self._index)
        self._pending = next(self._frames, None)
        self._next = None if self._pending is None else self._pending[0]
        return self._next is not None and self._next <= target


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, index: VideoIndex
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decoded frames with their positions; frames the index does not list are skipped.

    A function, not a method: a suspended generator of a method holds ``self``, and the
    ``Decoder`` holds the generator, a reference cycle that kept every closed reader's codec
    buffers (about 1 MB at 160x120, 11 MB at 720p) until the garbage collector's next full pass
    (scripts/bench_session_churn.py)."""
    for frame in container.decode(stream):
        stamp = frame.pts if frame.pts is not None else frame.dts
        position = None if stamp is None else index.position(stamp)
        if position is not None:
            yield position, frame


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

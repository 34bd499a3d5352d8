"""A session's frames in its video: ``select_frames`` applies the cut (by timestamp, so exact
for variable frame rates), the stride and the size the session asked for to a ``VideoIndex``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deployments.engine.video_index import VideoIndex
from deployments.protocol.errors import InvalidRequestError, VideoTooLargeError
from deployments.protocol.types import VideoInfo, VideoOptions

# Slack when comparing a requested time with frame timestamps (as video.py): a cut at a
# frame's time keeps that frame despite float rounding.
_TIME_EPS = 1e-6


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

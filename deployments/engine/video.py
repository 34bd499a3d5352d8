"""Video in: decode an uploaded file once with OpenCV, cut/stride/shrink it, and store the
processed frames as JPEGs in the session's directory. SAM 2 later reads them lazily through
``FrameSource``; nothing here keeps more than a few frames in memory."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from deployments.protocol.errors import (
    BadImageError,
    BadVideoError,
    InvalidRequestError,
    VideoTooLargeError,
)
from deployments.protocol.types import SourceVideo, VideoInfo, VideoOptions

FRAME_NAME = "{:06d}.jpg"
# Writes in flight while decoding: enough to overlap JPEG encoding with decoding, few enough
# that a long video never piles up in memory.
_WRITES_IN_FLIGHT = 8


def frame_path(frames_dir: Path, index: int) -> Path:
    return frames_dir / FRAME_NAME.format(index)


def ingest_video(
    source: Path,
    frames_dir: Path,
    options: VideoOptions,
    *,
    jpeg_quality: int,
    max_frames: int,
    max_seconds: float = math.inf,
) -> VideoInfo:
    """Decode ``source`` into ``frames_dir`` and describe the result.

    Raises BadVideoError (not a video, no frames, truncated), InvalidRequestError (a cut that
    selects nothing) and VideoTooLargeError (more than ``max_frames`` frames kept, or a
    selection longer than ``max_seconds``: refused before decoding when the header tells).
    """
    capture = cv2.VideoCapture(str(source))
    try:
        if not capture.isOpened():
            raise BadVideoError(
                "the upload is not a video OpenCV can read (unknown format, or a truncated file)"
            )
        src = _describe(capture)
        first, stop = _frame_range(src, options)
        _check_duration(src, first, stop, max_seconds)
        max_frames = min(max_frames, _frames_in(max_seconds, src.fps, options.frame_stride))
        size = _target_size(src.width, src.height, options.max_side)
        frames_dir.mkdir(parents=True, exist_ok=True)
        kept = _write_frames(
            _decoded(capture, src, first, stop, options.frame_stride),
            frames_dir,
            size,
            jpeg_quality,
            max_frames,
        )
    finally:
        capture.release()
    if kept == 0:
        raise BadVideoError("the video has no frames in the selected range")
    fps = src.fps / options.frame_stride
    return VideoInfo(
        num_frames=kept,
        fps=fps,
        width=size[0],
        height=size[1],
        start_time=first / src.fps,
        end_time=min(stop, first + kept * options.frame_stride) / src.fps,
        frame_stride=options.frame_stride,
        source=src,
    )


def _describe(capture: cv2.VideoCapture) -> SourceVideo:
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not math.isfinite(fps) or fps <= 0 or width <= 0 or height <= 0:
        raise BadVideoError("the video reports no frame rate or size; it may be corrupt")
    count = max(count, 0)
    return SourceVideo(
        width=width, height=height, fps=fps, num_frames=count, duration_s=count / fps
    )


def _frame_range(src: SourceVideo, options: VideoOptions) -> tuple[int, int]:
    """Source frame indices [first, stop) selected by start_time/end_time."""
    first = round((options.start_time or 0.0) * src.fps)
    stop = math.inf if options.end_time is None else math.ceil(options.end_time * src.fps - 1e-6)
    if src.num_frames and first >= src.num_frames:
        raise InvalidRequestError(
            f"start_time {options.start_time}s is past the end of the video ({src.duration_s:.2f}s)"
        )
    if src.num_frames:
        stop = min(stop, src.num_frames)
    return first, int(stop) if math.isfinite(stop) else -1


def _check_duration(src: SourceVideo, first: int, stop: int, max_seconds: float) -> None:
    seconds = ((stop if stop >= 0 else src.num_frames) - first) / src.fps
    if seconds > max_seconds:
        raise VideoTooLargeError(
            f"the selected video is {seconds:.0f}s long, more than {max_seconds:.0f}s; cut it "
            "with start_time/end_time",
            max_seconds=max_seconds,
        )


def _frames_in(seconds: float, fps: float, stride: int) -> int:
    """Frames kept from ``seconds`` of video (for videos whose header has no frame count)."""
    return math.ceil(seconds * fps / stride) if math.isfinite(seconds) else 2**62


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) shrunk so the longer side fits ``max_side``; never upscaled."""
    longer = max(width, height)
    if max_side is None or longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decoded(
    capture: cv2.VideoCapture, src: SourceVideo, first: int, stop: int, stride: int
) -> Iterator[np.ndarray]:
    """BGR frames first, first+stride, ... before stop (-1: to the end).

    Reads sequentially (seeking is frame-inaccurate for many codecs) and raises BadVideoError
    when the file ends before the frame count its header promised.
    """
    index = 0
    while stop < 0 or index < stop:
        wanted = index >= first and (index - first) % stride == 0
        ok = capture.grab()
        if not ok:
            break
        if wanted:
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                break
            yield frame
        index += 1
    expected = stop if stop >= 0 else src.num_frames
    if src.num_frames and index < expected:
        raise BadVideoError(
            f"the video is truncated or corrupt: decoding stopped at frame {index} of "
            f"{src.num_frames}",
            decoded_frames=index,
            expected_frames=src.num_frames,
        )


def _write_frames(
    frames: Iterator[np.ndarray],
    frames_dir: Path,
    size: tuple[int, int],
    jpeg_quality: int,
    max_frames: int,
) -> int:
    """Resize and JPEG-encode frames on a small pool while decoding goes on; returns the count."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    pending: list[Future[None]] = []
    kept = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="frame-writer") as pool:
        for frame in frames:
            if kept >= max_frames:
                raise VideoTooLargeError(
                    f"the video has more than {max_frames} frames; cut it with start_time/"
                    "end_time or thin it with frame_stride",
                    max_frames=max_frames,
                )
            pending.append(
                pool.submit(_write_one, frame, frame_path(frames_dir, kept), size, params)
            )
            kept += 1
            if len(pending) >= _WRITES_IN_FLIGHT:
                pending.pop(0).result()
        for future in pending:
            future.result()
    return kept


def _write_one(frame: np.ndarray, path: Path, size: tuple[int, int], params: list[int]) -> None:
    if (frame.shape[1], frame.shape[0]) != size:
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", frame, params)
    if not ok:
        raise BadVideoError(f"could not encode frame {path.stem}")
    path.write_bytes(data.tobytes())


def write_single_frame(image_rgb: np.ndarray, frames_dir: Path, jpeg_quality: int) -> VideoInfo:
    """Store one image as a one-frame video (image segmentation runs as a one-frame session)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.size == 0:
        raise BadImageError("the image must have three colour channels")
    frames_dir.mkdir(parents=True, exist_ok=True)
    height, width = image_rgb.shape[:2]
    _write_one(
        cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
        frame_path(frames_dir, 0),
        (width, height),
        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality],
    )
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


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes (JPEG, PNG, ...) as RGB; BadImageError when they are not an image."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadImageError("the upload is not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

"""A still image as a one-frame video (image segmentation runs as a one-frame session):
``write_image`` keeps it as a PNG and ``ImageReader`` serves it as a ``FrameReader``."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from deployments.protocol.errors import BadImageError
from deployments.protocol.types import SourceVideo, VideoInfo


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

"""Small synthetic videos for tests: moving shapes on a flat background, written with OpenCV
so the suite needs no footage from outside."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".mov": "mp4v", ".webm": "VP80"}


def write_video(
    path: Path, num_frames: int = 24, size: tuple[int, int] = (160, 120), fps: float = 10.0
) -> Path:
    """A circle moving right and a square moving down; the codec follows the suffix."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*CODECS[path.suffix]), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    for i in range(num_frames):
        frame = np.full((height, width, 3), 40, np.uint8)
        cx = int(width * 0.2 + (width * 0.6) * i / max(num_frames - 1, 1))
        cv2.circle(frame, (cx, height // 2), height // 8, (40, 220, 40), -1)
        sy = int(height * 0.1 + (height * 0.5) * i / max(num_frames - 1, 1))
        cv2.rectangle(frame, (width - 50, sy), (width - 20, sy + 25), (30, 30, 230), -1)
        writer.write(frame)
    writer.release()
    return path


def circle_at(frame_index: int, num_frames: int, size: tuple[int, int]) -> tuple[float, float]:
    """Centre of the circle drawn by ``write_video`` on a frame."""
    width, height = size
    return width * 0.2 + (width * 0.6) * frame_index / max(num_frames - 1, 1), height / 2

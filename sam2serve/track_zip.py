"""``POST /track``'s ZIP, written on the client from a session's masks.

``/track`` answers one binary PNG per frame of the video, ``00000.png``..., at the source size:
255 where any object's mask is, 0 elsewhere, black frames included. No session export has that
layout (``png_zip`` is one PNG per frame *and object*, frames without a mask left out; ``davis``
holds object ids under a palette), so ``sam2serve track`` reads the session's masks page by
page and writes the same entries here: same names, order, size, mode and pixel values. The PNG
bytes differ from the server's (OpenCV's encoder there, zlib here): decoders see the same image.
A PNG encoder of twenty lines keeps OpenCV and Pillow off annotators' laptops."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from sam2serve.models import FrameMask, FrameMasks

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gray_png(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a (height, width) uint8 array."""
    height, width = image.shape
    rows = np.zeros((height, width + 1), np.uint8)  # each row: filter type 0, then its pixels
    rows[:, 1:] = image
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def binary_mask(masks: Iterable[FrameMask], height: int, width: int) -> np.ndarray:
    """Every object's mask together: 255 where any is, 0 elsewhere (``/track``'s pixels)."""
    union = np.zeros((height, width), bool)
    for mask in masks:
        if mask.area:
            union |= mask.to_numpy()
    return union.astype(np.uint8) * 255


def every_frame(frames: Iterable[FrameMasks], num_frames: int) -> Iterator[list[FrameMask]]:
    """The masks of frames 0..num_frames-1 in order, an empty list where none is stored
    (``frames`` holds only frames with a mask, in increasing order)."""
    stored = iter(frames)
    pending = next(stored, None)
    for index in range(num_frames):
        if pending is not None and pending.frame_index == index:
            yield pending.masks
            pending = next(stored, None)
        else:
            yield []


def write_track_zip(
    frames: Iterable[FrameMasks],
    num_frames: int,
    size: tuple[int, int],
    target: Path,
    on_frame: Callable[[], None] | None = None,
) -> Path:
    """The ZIP of ``/track`` for a video of ``num_frames`` frames of ``size`` (width, height),
    entry by entry (stored, as the server's): only one frame's mask is in memory at a time.
    Written to ``<target>.part`` and renamed when complete."""
    width, height = size
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            for index, masks in enumerate(every_frame(frames, num_frames)):
                archive.writestr(f"{index:05d}.png", gray_png(binary_mask(masks, height, width)))
                if on_frame is not None:
                    on_frame()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target

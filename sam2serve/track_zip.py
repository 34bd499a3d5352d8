"""``POST /track``'s ZIP, written on the client from a session's masks.

``/track`` answers one binary PNG per frame of the video, ``00000.png``..., at the source size:
255 where any object's mask is, 0 elsewhere, black frames included. No session export has that
layout (``png_zip`` is one PNG per frame *and object*, frames without a mask left out; ``davis``
holds object ids under a palette), so ``sam2serve track`` reads the session's masks page by
page and writes the same entries here.

The server writes the same ZIP in ``deployments/engine/exports.py``, and the two writers stay
two on purpose: the client imports nothing of the server (annotators install it without torch,
Ray, OpenCV or PyAV), and the engine imports nothing of the client, so there is no module both
could share. They write the same bytes instead: the PNG encoder below makes what OpenCV's
``imencode(".png")`` makes for a greyscale image (libpng with OpenCV's settings: the Sub filter
on every row, zlib level 1 with the RLE strategy, the window shrunk for small images as libpng
does, IDAT chunks of 8 KiB), and tests/client/test_track_zip.py checks that both writers give
byte-identical ZIPs for the same masks."""

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
_IDAT_BYTES = 8192  # libpng's default compression buffer: one IDAT chunk each


def gray_png(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a (height, width) uint8 array, byte for byte as OpenCV's."""
    height, width = image.shape
    rows = np.empty((height, width + 1), np.uint8)
    # Each row: its filter type, then its bytes. Sub (1): each byte minus the one on its left;
    # libpng leaves a one-pixel-wide image unfiltered (0).
    rows[:, 0] = 1 if width > 1 else 0
    rows[:, 1:2] = image[:, :1]
    rows[:, 2:] = image[:, 1:] - image[:, :-1]
    data = _deflate(rows.tobytes())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = [_chunk(b"IDAT", data[i : i + _IDAT_BYTES]) for i in range(0, len(data), _IDAT_BYTES)]
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", header), *idat, _chunk(b"IEND", b"")))


def _deflate(raw: bytes) -> bytes:
    """zlib as libpng drives it for OpenCV: level 1, the RLE strategy, and for an image of at
    most 16 KiB the smallest window that holds it, which the stream's header then declares."""
    window_bits = 15
    if len(raw) <= 16384:
        while len(raw) + 262 <= 1 << (window_bits - 1):
            window_bits -= 1
    compressor = zlib.compressobj(1, zlib.DEFLATED, window_bits, 8, zlib.Z_RLE)
    data = bytearray(compressor.compress(raw) + compressor.flush())
    if len(raw) <= 16384:  # libpng's optimize_cmf: the header's window as small as the data
        cinfo = data[0] >> 4
        while cinfo > 0 and len(raw) <= 1 << (cinfo + 7):
            cinfo -= 1
        data[0] = (data[0] & 0x0F) | (cinfo << 4)
        data[1] = (data[1] & 0xE0) + 31 - ((data[0] << 8) + (data[1] & 0xE0)) % 31
    return bytes(data)


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

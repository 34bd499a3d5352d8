"""A video track's samples read from an MP4/MOV header (``moov``), without touching ``mdat``.

Demuxing every packet reads the whole file; from object storage that is the whole hour of video
before the first click. The header's sample tables hold the same facts: decode times (``stts``),
composition offsets (``ctts``), sync samples (``stss``), the time scale (``mdhd``) and the edit
list (``elst``). ``read_samples`` returns them as the demuxer (FFmpeg's mov) would report them,
or None where the header cannot say for sure, and the caller demuxes instead: fragmented MP4
(``mvex``: samples live in ``moof`` boxes), edit lists other than one plain edit, no video track,
and every container that is not ISO BMFF (MKV/WebM, AVI, MPEG-TS).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import numpy as np

# Boxes whose children are boxes, on the way to a video track's sample table.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
# A moov larger than this is not a header we read (FFmpeg's own limit is near this too).
_MAX_MOOV = 512 * 2**20


@dataclass(frozen=True)
class Samples:
    """The video track's samples in decode order, in ``time_base`` units, as demuxed."""

    pts: np.ndarray
    dts: np.ndarray
    key: np.ndarray
    duration: np.ndarray
    time_base: Fraction
    width: int
    height: int


def read_samples(file: BinaryIO) -> Samples | None:
    """The first video track's samples from the ``moov`` of ``file`` (seekable); None where the
    header cannot give them (see the module's docstring). Reads the top-level box headers and
    the ``moov`` only."""
    moov = _top_level_moov(file)
    if moov is None:
        return None
    boxes = dict(_children(moov))
    if b"mvex" in boxes:
        return None
    mvhd = boxes.get(b"mvhd", b"")
    if len(mvhd) < 24:
        return None
    movie_timescale = struct.unpack_from(">I", mvhd, 20 if mvhd[0] == 1 else 12)[0]
    for kind, body in _children(moov):
        if kind == b"trak":
            track = _track(body)
            if track is not None:
                return _samples(track, movie_timescale)
    return None


def _top_level_moov(file: BinaryIO) -> bytes | None:
    file.seek(0, 2)
    end = file.tell()
    offset = 0
    while offset + 8 <= end:
        file.seek(offset)
        header = file.read(16)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header[:8])
        start = 8
        if size == 1:
            if len(header) < 16:
                return None
            size, start = struct.unpack(">Q", header[8:16])[0], 16
        elif size == 0:
            size = end - offset
        if size < start or not kind.isascii():
            return None  # not ISO BMFF (MKV, AVI, TS...) or a corrupt box
        if kind == b"moov":
            if size > _MAX_MOOV:
                return None
            file.seek(offset + start)
            body = file.read(size - start)
            return body if len(body) == size - start else None
        offset += size
    return None


def _children(data: bytes) -> list[tuple[bytes, bytes]]:
    """The boxes inside ``data`` (a container box's body)."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        start = 8
        if size == 1:
            size, start = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif size == 0:
            size = len(data) - offset
        if size < start or offset + size > len(data):
            raise ValueError(f"box {kind!r} overruns its parent")
        boxes.append((kind, data[offset + start : offset + size]))
        offset += size
    return boxes


def _track(trak: bytes) -> dict[bytes, bytes] | None:
    """The leaf boxes of a video track (mdhd, hdlr, elst, stsd, stts...), None for another kind."""
    leaves: dict[bytes, bytes] = {}

    def walk(data: bytes) -> None:
        for kind, body in _children(data):
            if kind in _CONTAINERS:
                walk(body)
            else:
                leaves.setdefault(kind, body)

    walk(trak)
    hdlr = leaves.get(b"hdlr", b"")
    if hdlr[8:12] != b"vide" or not {b"mdhd", b"stsd", b"stts"} <= leaves.keys():
        return None
    return leaves


def _samples(track: dict[bytes, bytes], movie_timescale: int) -> Samples | None:
    mdhd = track[b"mdhd"]
    timescale = struct.unpack_from(">I", mdhd, 20 if mdhd[0] == 1 else 12)[0]
    deltas = _runs(track[b"stts"], np.uint32)
    count = len(deltas)
    if count == 0 or timescale == 0:
        return None
    dts = np.concatenate([[0], np.cumsum(deltas[:-1], dtype=np.int64)])
    offsets = _runs(track[b"ctts"], np.int32) if b"ctts" in track else np.zeros(count, np.int64)
    if len(offsets) != count:
        return None
    edit = _edit(track.get(b"elst"))
    if edit is None:
        return None
    shift, span = edit
    pts = dts + offsets - shift
    last = int(pts.max())
    if pts.min() < 0 or (span and movie_timescale and span * timescale <= last * movie_timescale):
        return None  # the edit hides whole frames at either end: the demuxer drops them
    key = np.ones(count, bool)
    if b"stss" in track:
        key[:] = False
        (entries,) = struct.unpack_from(">I", track[b"stss"], 4)
        sync = np.frombuffer(track[b"stss"], ">u4", entries, 8).astype(np.int64) - 1
        if np.any((sync < 0) | (sync >= count)):
            return None
        key[sync] = True
    width, height = _size(track[b"stsd"])
    return Samples(
        pts=pts,
        dts=dts - shift,
        key=key,
        duration=deltas,
        time_base=Fraction(1, timescale),
        width=width,
        height=height,
    )


def _runs(box: bytes, dtype: type) -> np.ndarray:
    """A run-length table (stts, ctts: entry count, then (count, value) pairs) expanded to one
    value per sample."""
    (entries,) = struct.unpack_from(">I", box, 4)
    table = np.frombuffer(box, ">u4", 2 * entries, 8).reshape(-1, 2)
    values = table[:, 1].astype(np.uint32).view(np.int32) if dtype is np.int32 else table[:, 1]
    return np.repeat(values.astype(np.int64), table[:, 0].astype(np.int64))


def _edit(elst: bytes | None) -> tuple[int, int] | None:
    """The one plain edit as (media time, duration in the movie's time scale; 0: all): the
    demuxer subtracts its media time from every timestamp. None for an edit list it would treat
    otherwise (empty edits that delay the start, several edits, a rate other than 1)."""
    if elst is None:
        return 0, 0
    version = elst[0]
    (entries,) = struct.unpack_from(">I", elst, 4)
    if entries != 1:
        return None
    if version == 1:
        span, media_time, rate = struct.unpack_from(">QqI", elst, 8)
    else:
        span, media_time, rate = struct.unpack_from(">IiI", elst, 8)
    if media_time < 0 or rate != 0x10000:
        return None
    return media_time, span


def _size(stsd: bytes) -> tuple[int, int]:
    """Width and height of the first visual sample entry (after the 8-byte full-box header and
    the entry's own header: reserved, data reference index, pre-defined fields)."""
    width, height = struct.unpack_from(">HH", stsd, 8 + 8 + 24)
    return width, height

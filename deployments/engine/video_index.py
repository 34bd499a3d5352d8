"""The index of a video's frames, built by demuxing its packets without decoding them.

``VideoIndex`` holds every frame's timestamp and the keyframes (exact for variable frame rates
and whatever the header claims). A video in object storage (``ObjectVideo``) is indexed from its
MP4 header's sample tables instead, where it has them (``mp4_index``): demuxing would read the
whole object. A session keeps it next to its masks (``index.npz``), so
another replica reopens the video without demuxing it again. ``check_source`` tells whether the
file is still the one indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import numpy as np

from deployments.engine.mp4_index import Samples, read_samples
from deployments.engine.object_video import ObjectVideo, RangeFile
from deployments.protocol.errors import BadVideoError, NotFoundError, SourceChangedError
from deployments.protocol.types import SourceVideo

# Where a session's frames come from: a file (upload, VIDEO_ROOT) or an object (s3://).
VideoSource = Path | ObjectVideo

INDEX_VERSION = 1


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
    def build(cls, source: VideoSource) -> VideoIndex:
        """Demux ``source`` (no decoding), or read an object's MP4 header where it has one.
        Raises BadVideoError for a file that is not a video, has no video stream or no frames,
        or whose packets carry no timestamps."""
        stat = source_stat(source)
        data = _input(source)
        samples = None if isinstance(data, str) else read_samples(data)
        with _open(data) as container:
            stream = video_stream(container)
            packets = _header_packets(samples, stream) or _demux(container, stream)
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
            time_base = stream.time_base
        if not len(packets.pts):
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
        stat: tuple[int, int],
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
            source_size=stat[0],
            source_mtime_ns=stat[1],
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

    def check_source(self, source: VideoSource) -> None:
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


def check_source(source: VideoSource, size: int, mtime_ns: int) -> None:
    """Raise SourceChangedError unless ``source`` still has this size and mtime."""
    try:
        stat = source_stat(source)
    except (FileNotFoundError, NotFoundError):
        raise SourceChangedError(
            f"the video {source.name} was removed after the session was created"
        ) from None
    if stat != (size, mtime_ns):
        raise SourceChangedError(
            f"the video {source.name} changed after the session was created; create a new "
            "session on it",
            size=stat[0],
            expected_size=size,
        )


def source_stat(source: VideoSource) -> tuple[int, int]:
    """(size, modification time in ns); FileNotFoundError or NotFoundError when it is gone."""
    if isinstance(source, ObjectVideo):
        return source.stat()
    stat = source.stat()
    return stat.st_size, stat.st_mtime_ns


@dataclass
class _Packets:
    pts: Sequence[int]
    dts: Sequence[int]
    key: Sequence[bool]
    duration: Sequence[int]


def open_container(source: VideoSource) -> av.container.InputContainer:
    """``source`` opened by PyAV (an object through range reads); BadVideoError for a file it
    cannot read."""
    return _open(_input(source))


def _input(source: VideoSource) -> str | RangeFile:
    return source.open() if isinstance(source, ObjectVideo) else str(source)


def _open(data: str | RangeFile) -> av.container.InputContainer:
    if not isinstance(data, str):
        data.seek(0)
    try:
        return av.open(data)
    except av.FFmpegError as exc:
        raise BadVideoError(
            "the upload is not a video PyAV can read (unknown format, or a truncated file)"
        ) from exc


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise BadVideoError("the file has no video stream")


def _header_packets(
    samples: Samples | None, stream: av.video.stream.VideoStream
) -> _Packets | None:
    """An object's packets from its MP4 header, where the header's first video track is the
    stream PyAV chose (same time base and sample count); None: demux instead. Files are
    demuxed as before: reading them whole is cheap."""
    if samples is None or (samples.time_base, len(samples.pts)) != (
        stream.time_base,
        stream.frames,
    ):
        return None
    return _Packets(samples.pts, samples.dts, samples.key, samples.duration)


def _demux(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _Packets:
    """Timestamps, keyframe flags and durations of the stream's packets, in decode order.

    Skips empty packets (the demuxer's end marker) and those marked discard (frames before an
    edit list's start, which the decoder drops). A packet without a pts falls back to its dts
    (streams without reordering); one with neither is refused: its frame cannot be found again.
    """
    packets = _Packets(all_pts := [], all_dts := [], keys := [], durations := [])
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
            all_pts.append(pts if pts is not None else dts)
            all_dts.append(dts if dts is not None else pts)
            keys.append(packet.is_keyframe)
            durations.append(packet.duration or 0)
    except av.FFmpegError as exc:
        raise BadVideoError(f"the video is truncated or corrupt: {exc}") from exc
    return packets


def _frame_ticks(pts: np.ndarray, rate: Fraction | None, time_base: Fraction) -> int:
    """Duration of the last frame when its packet has none: the typical frame interval."""
    if len(pts) > 1:
        return int(np.median(np.diff(pts)))
    return max(1, round(1 / (rate * time_base))) if rate else max(1, round(1 / time_base))

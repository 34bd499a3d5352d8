"""What the benchmark scripts share: timing (and the machine's other load meanwhile), the clips
they read (geometry, a plain decode, synthesized and looped H.264), SAM 2 JPEG folders, and
printing figures."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import av
import cv2
import numpy as np

if TYPE_CHECKING:
    from deployments.engine.video_index import VideoIndex
    from deployments.engine.video_reader import VideoReader

T = TypeVar("T")
# The bare side's JPEG folder, as SAM 2's README makes one (quality as the engine once stored).
JPEG_QUALITY = 90


# ---- timing ---------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds all processes have been busy since boot (Linux /proc/stat: all but idle and
    iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@contextmanager
def timed_block() -> Iterator[dict[str, float]]:
    """Wall seconds of the block (``wall``) and the CPU seconds other processes took meanwhile
    (``others``): on a shared machine the second says whether the first can be trusted."""
    out: dict[str, float] = {}
    wall, own, busy = time.perf_counter(), time.process_time(), machine_busy_s()
    yield out
    out["wall"] = time.perf_counter() - wall
    out["others"] = max(0.0, machine_busy_s() - busy - (time.process_time() - own))


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def repeat_timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls."""
    return [timed(fn) for _ in range(repeats)]


def concurrently(calls: list[Callable[[], T]]) -> tuple[list[T], float]:
    """Each call on a thread of its own, all at once; their results and the wall seconds."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results, time.perf_counter() - began


# ---- clips ----------------------------------------------------------------------------------


def clip_geometry(video: Path) -> tuple[float, int, int]:
    """fps, width, height of the clip."""
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise SystemExit(f"cannot open {video}")
        return (
            capture.get(cv2.CAP_PROP_FPS),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def decode_bgr(video: Path, frames: int) -> Iterator[np.ndarray]:
    """The first ``frames`` BGR frames, as a plain OpenCV read loop does them."""
    capture = cv2.VideoCapture(str(video))
    try:
        for _ in range(frames):
            ok, frame = capture.read()
            if not ok:
                raise SystemExit(f"{video} has fewer than {frames} frames")
            yield frame
    finally:
        capture.release()


def write_jpegs(frames_bgr: Iterable[np.ndarray], folder: Path, quality: int) -> None:
    """The frames as a SAM 2 JPEG folder (``00000.jpg``, ...), in the order given."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for index, frame in enumerate(frames_bgr):
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), frame, params)


def write_h264(
    path: Path,
    frames: Iterable[av.VideoFrame],
    size: tuple[int, int],
    fps: int,
    options: dict[str, str],
) -> float:
    """Encode ``frames`` with x264 into ``path`` unless it exists (a cache: made once per path);
    seconds spent writing it (0 if cached)."""
    if path.exists():
        return 0.0
    began = time.perf_counter()
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for frame in frames:
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    partial.rename(path)
    return time.perf_counter() - began


def loop_footage(source: Path, path: Path, loops: int) -> Path:
    """``source`` repeated ``loops`` times by remuxing its packets (no re-encoding), cached."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        for loop in range(loops):
            with av.open(str(source)) as clip:
                stream = clip.streams.video[0]
                if loop == 0:
                    target = out.add_stream_from_template(stream)
                packets = [packet for packet in clip.demux(stream) if packet.size]
                if loop == 0:
                    span = max(p.pts + p.duration for p in packets) - min(p.pts for p in packets)
                for packet in packets:
                    packet.pts += loop * span
                    packet.dts += loop * span
                    packet.stream = target
                    out.mux(packet)
    partial.rename(path)
    return path


def whole_video_reader(
    video: Path, index: VideoIndex, size: tuple[int, int] | None = None
) -> VideoReader:
    """The engine's reader over every frame of ``video`` (at ``size``, else the video's)."""
    from deployments.engine.video_reader import VideoReader
    from deployments.engine.video_selection import select_frames
    from deployments.protocol.types import VideoOptions

    selection = select_frames(index, VideoOptions(), max_frames=index.num_frames)
    return VideoReader(video, index, selection, size=size)


def unvisited_frames(index: VideoIndex, count: int, seed: int) -> list[int]:
    """Frames a reader must decode from their keyframe: one in each of ``count`` GOPs drawn at
    random (all of them if fewer), at a random offset, in random order."""
    rng = random.Random(seed)
    gops = rng.sample(range(len(index.keyframes)), min(count, len(index.keyframes)))
    ends = [*index.keyframes[1:].tolist(), index.num_frames]
    return [rng.randrange(int(index.keyframes[g]), ends[g]) for g in gops]


# ---- SAM 2 and reports ----------------------------------------------------------------------


def bare_click_s(predictor: object, state: dict, frame: int, point: np.ndarray) -> float:
    """Seconds of one positive point (``[[x, y]]``) added by SAM 2's own predictor."""
    started = time.perf_counter()
    predictor.add_new_points_or_box(
        state, frame_idx=frame, obj_id=1, points=point, labels=np.array([1], np.int32)
    )
    return time.perf_counter() - started


def print_figures(title: str, figures: dict[str, float | int | str]) -> None:
    """A titled block of name/value lines on the terminal."""
    print(f"\n{title}")
    for name, value in figures.items():
        print(
            f"  {name:24} {value:12.1f}" if isinstance(value, float) else f"  {name:24} {value:12}"
        )

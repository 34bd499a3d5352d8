"""Soak: an hour-long video through the engine, end to end, with the figures issue 9 asks for.

    python scripts/soak_long_video.py [--seconds 3600] [--frames N] [--image-size 256]
        [--size 320x180] [--write docs/benchmarks.md]

1. Synthesizes a long H.264 with PyAV (moving shapes, a keyframe every 250 frames as x264's
   default keyint has at most; cached under ``--cache``).
2. Creates a session on it (the file is referenced in place, as a server-side video) and reports
   the time until it is ready and until its first click answers.
3. Clicks on frames spread over the whole video, never visited before, on a second session, and
   reports each latency.
4. Propagates ``--frames`` frames forward from frame 0 (default: all) and reports host RSS, SAM 2
   state bytes and frames/s at 1k, 10k, 30k and 100k frames, and the session directory's bytes
   besides the source and the masks.
5. Exports COCO and PNG ZIP and reports each export's time and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np
import psutil
from bench_common import timed, write_h264
from local_service import write_section

from deployments.engine import EngineSession, SessionEngine
from deployments.protocol import (
    EngineSettings,
    Prompt,
    PropagationRequest,
    ServiceSettings,
    VideoOptions,
)

TITLE = "## Soak: an hour-long video (scripts/soak_long_video.py)"
FPS = 30
GOP = 250
X264 = {"preset": "ultrafast", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"}
CHECKPOINTS = (1_000, 10_000, 30_000, 100_000)


def synthesize(path: Path, num_frames: int, size: tuple[int, int]) -> float:
    """Write the video unless it is cached; seconds spent writing it (0 if cached)."""
    return write_h264(path, _shapes(num_frames, size), size, FPS, X264)


def _shapes(num_frames: int, size: tuple[int, int]) -> Iterator[av.VideoFrame]:
    """A square circling the frame and a bar sweeping down, on a flat background."""
    width, height = size
    for i in range(num_frames):
        rgb = np.full((height, width, 3), 40, np.uint8)
        angle = 2 * np.pi * i / 600
        cx = int(width / 2 + width / 4 * np.cos(angle))
        cy = int(height / 2 + height / 4 * np.sin(angle))
        rgb[max(cy - 12, 0) : cy + 12, max(cx - 12, 0) : cx + 12] = (40, 220, 40)
        bar = (i * 2) % height
        rgb[bar : bar + 8, width // 8 : width // 3] = (220, 40, 40)
        yield av.VideoFrame.from_ndarray(rgb, format="rgb24")


class PeakRss:
    """Samples this process's RSS on a thread while a block runs."""

    def __init__(self) -> None:
        self.peak = 0

    @contextmanager
    def watch(self) -> Iterator[PeakRss]:
        process, stop = psutil.Process(), threading.Event()
        self.peak = process.memory_info().rss

        def sample() -> None:
            while not stop.wait(0.05):
                self.peak = max(self.peak, process.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def directory_bytes(directory: Path, skip: tuple[str, ...]) -> int:
    """Bytes of the files under ``directory`` whose names do not start with ``skip``."""
    return sum(
        p.stat().st_size
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(skip)
    )


def centre_click(session: EngineSession, frame: int, obj_id: int) -> Prompt:
    width, height = session.video.width, session.video.height
    return Prompt(frame_index=frame, obj_id=obj_id, points=[(width / 2, height / 2)])


def soak(args: argparse.Namespace, video: Path, storage: Path) -> dict[str, object]:
    settings = EngineSettings(
        weights="random",
        image_size=args.image_size,
        device=args.device,
        storage_root=storage,
        max_sessions=2,
        retention_mb=args.retention_mb,
        feature_cache_mb=args.feature_cache_mb,
    )
    engine = SessionEngine(settings)
    try:
        return _run(args, engine, video)
    finally:
        engine.close()


def _run(args: argparse.Namespace, engine: SessionEngine, video: Path) -> dict[str, object]:
    figures: dict[str, object] = {}
    began = time.perf_counter()
    main = engine.session(engine.create_session(video, VideoOptions()).session_id)
    figures["ready_s"] = time.perf_counter() - began
    figures["first_click_s"] = timed(lambda: main.add_prompt(centre_click(main, 0, 1)))
    figures["to_first_click_s"] = figures["ready_s"] + figures["first_click_s"]
    figures["num_frames"] = main.video.num_frames
    figures["clicks"] = _clicks(engine, video, main.video.num_frames, args.clicks)
    figures["propagation"] = _propagate(main, args.frames or main.video.num_frames)
    skip = (video.name, "masks.sqlite")
    figures["session_bytes"] = directory_bytes(main.directory, skip)
    figures["mask_bytes"] = directory_bytes(main.directory, ()) - directory_bytes(
        main.directory, ("masks.sqlite",)
    )
    figures["exports"] = {fmt: _export(main, fmt) for fmt in ("coco", "png_zip")}
    return figures


def _clicks(engine: SessionEngine, video: Path, num_frames: int, count: int) -> list[tuple]:
    """(frame, seconds) of clicks on frames spread over the video, never visited before."""
    other = engine.session(engine.create_session(video, VideoOptions()).session_id)
    try:
        frames = np.linspace(num_frames // (count + 1), num_frames - 1, count).astype(int)
        return [
            (int(f), timed(lambda f=f: other.add_prompt(centre_click(other, int(f), 1))))
            for f in frames
        ]
    finally:
        engine.delete_session(other.id)


def _propagate(session: EngineSession, frames: int) -> list[dict[str, float]]:
    """Figures at each checkpoint the propagation passes, and at its end."""
    rows, began, done = [], time.perf_counter(), 0
    request = PropagationRequest(direction="forward", start_frame_index=0, max_frames=frames - 1)
    checkpoints = [c for c in CHECKPOINTS if c < frames] + [frames]
    for event in session.propagate(request):
        if event.type != "frame":
            continue
        done += 1
        if done in checkpoints:
            elapsed = time.perf_counter() - began
            rows.append(
                {
                    "frames": done,
                    "rss_mb": rss_mb(),
                    "state_mb": session.state_nbytes() / 2**20,
                    "fps": done / elapsed,
                    "elapsed_s": elapsed,
                }
            )
            print(f"  {rows[-1]}", flush=True)
    return rows


def _export(session: EngineSession, fmt: str) -> dict[str, float]:
    peak = PeakRss()
    with tempfile.TemporaryDirectory() as scratch, peak.watch():
        target = Path(scratch) / f"export.{fmt}"
        seconds = timed(lambda: session.export(fmt, target))
        size = target.stat().st_size
    return {"seconds": seconds, "peak_rss_mb": peak.peak / 2**20, "mb": size / 2**20}


def report(args: argparse.Namespace, figures: dict[str, object], synth_s: float) -> str:
    clicks = figures["clicks"]
    latencies = [s for _, s in clicks]
    rows = figures["propagation"]
    first, last = rows[0], rows[-1]
    lines = [
        TITLE,
        "",
        f"Command: `{args.command}`",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch threads "
        f"{_torch_threads()}. Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Synthetic H.264, {args.seconds:g} s at {FPS} fps ({figures['num_frames']} frames), "
        f"{args.size}, keyframe every {GOP} frames (written in {synth_s:.0f} s, 0 = cached); "
        f"sam2.1_hiera_tiny with random weights at image size {args.image_size} on "
        f"{args.device}, retention_mb {args.retention_mb:g}, feature_cache_mb "
        f"{args.feature_cache_mb:g} (the defaults' numbers of frames at 1024), "
        f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX')} as in a replica.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| session ready (index) s | {figures['ready_s']:.2f} |",
        f"| first click s | {figures['first_click_s']:.2f} |",
        f"| ready + first click s | {figures['to_first_click_s']:.2f} |",
        f"| clicks on never-visited frames ({len(clicks)}) s, median / max | "
        f"{statistics.median(latencies):.2f} / {max(latencies):.2f} |",
        f"| session directory bytes besides source and masks | {figures['session_bytes']} |",
        f"| masks.sqlite bytes after {last['frames']} frames | {figures['mask_bytes']} |",
    ]
    for fmt, export in figures["exports"].items():
        lines.append(
            f"| {fmt} export: s / peak RSS MB / file MB | {export['seconds']:.1f} / "
            f"{export['peak_rss_mb']:.0f} / {export['mb']:.1f} |"
        )
    lines += [
        "",
        "| frames propagated | host RSS MB | SAM 2 state MB | frames/s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['frames']} | {r['rss_mb']:.0f} | {r['state_mb']:.1f} | {r['fps']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Host RSS at {last['frames']} frames / at {first['frames']}: "
        f"{last['rss_mb'] / first['rss_mb']:.3f}. Clicks (frame: s): "
        + ", ".join(f"{f}: {s:.2f}" for f, s in clicks)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    arenas = str(ServiceSettings.model_fields["replica_malloc_arena_max"].default)
    if os.environ.get("MALLOC_ARENA_MAX") != arenas:
        # Run as a SAM 2 replica runs; glibc reads it only as the process starts.
        os.execve(
            sys.executable, [sys.executable, *sys.argv], os.environ | {"MALLOC_ARENA_MAX": arenas}
        )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--frames", type=int, help="frames to propagate (default: all)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--size", default="320x180", help="video frame size WxH")
    parser.add_argument("--clicks", type=int, default=8)
    parser.add_argument(
        "--retention-mb",
        type=float,
        help="the sessions' retention_mb (default: the default's number of frames at 1024, "
        "scaled to --image-size: SAM 2's outputs grow with its square)",
    )
    parser.add_argument(
        "--feature-cache-mb",
        type=float,
        help="the sessions' feature_cache_mb (default: scaled as --retention-mb is)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sam2-soak")
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    args = parser.parse_args()
    args.command = "python scripts/soak_long_video.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if v is not None and k not in ("cache", "command", "write")
    )
    scale = (args.image_size / 1024) ** 2
    for name in ("retention_mb", "feature_cache_mb"):
        if getattr(args, name) is None:
            setattr(args, name, EngineSettings.model_fields[name].default * scale)
    size = tuple(int(v) for v in args.size.split("x"))
    args.cache.mkdir(parents=True, exist_ok=True)
    num_frames = round(args.seconds * FPS)
    video = args.cache / f"soak_{num_frames}_{args.size}.mp4"
    synth_s = synthesize(video, num_frames, size)
    print(f"video {video} ({num_frames} frames, synthesized in {synth_s:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory(dir=args.cache) as storage:
        figures = soak(args, video, Path(storage))
    text = report(args, figures, synth_s)
    print(text)
    if args.write:
        write_section(args.write, TITLE, text)


if __name__ == "__main__":
    main()

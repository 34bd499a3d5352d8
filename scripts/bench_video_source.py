"""Benchmark the engine's frames on demand (``video_index``, ``video_reader``) against SAM 2's
own cost of a click.

Measures, for a synthetic 1280x720 30 fps H.264 (moving shapes, a keyframe every 250 frames as
x264's default keyint has at most; one hour by default, cached under ``--cache``):

- the time to index it (demux only) and to save and load the index;
- the latency of reading frames never visited before, one per GOP, in random order;
- frames/s through the reader walking forward and backward, and the process's peak RSS;

the same on real footage (``../shared/videos/01_dog.mp4``, 720p High profile with B-frames,
looped by remuxing to an hour, GOPs of 250 and 39 frames), since flat synthetic frames decode
several times faster than camera footage; and SAM 2.1 tiny's click on this CPU (random
weights, fp32, AVX2 as a plain CPU runs it): ``forward_image`` alone and a bare
``add_new_points_or_box`` on pre-extracted JPEGs, at image sizes 1024 and 256. A click on a
never-visited frame costs the read plus the same model work, so the ratio printed last is what
the 1.5x bar of issue 9 applies to.

With ``--sessions`` it measures the engine end to end instead, on the same videos
(``bench_video_sessions.py``).

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/bench_video_source.py
    python scripts/bench_video_source.py --sessions
"""

from __future__ import annotations

import os

# Before torch loads: a plain AVX2 CPU's kernels (the script sets them if the caller did not).
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from bench_common import (
    bare_click_s,
    decode_bgr,
    loop_footage,
    print_figures,
    repeat_timed,
    unvisited_frames,
    whole_video_reader,
    write_h264,
    write_jpegs,
)
from bench_video_sessions import bench_sessions
from local_service import REPO

from deployments.engine.video_index import VideoIndex

SIZE = (1280, 720)
FPS = 30
GOP = 250
# x264's fastest preset keeps an hour's synthesis to minutes; B-frames kept so the index has
# to reorder, a fixed keyframe interval as x264's default (keyint 250) has at most.
X264 = {"preset": "ultrafast", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=3"}
FOOTAGE = (REPO / "../shared/videos/01_dog.mp4").resolve()


def synthesize(path: Path, num_frames: int) -> Path:
    """An H.264 MP4 of moving squares on a gradient, cached: made once per path."""
    write_h264(path, _shapes(num_frames), SIZE, FPS, X264)
    return path


def _shapes(num_frames: int) -> Iterator[av.VideoFrame]:
    width, height = SIZE
    base = np.full((height * 3 // 2, width), 128, np.uint8)
    base[:height] = np.linspace(30, 200, width, dtype=np.uint8)[None, :]
    for i in range(num_frames):
        planes = base.copy()
        x, y = (i * 7) % (width - 160), (i * 3) % (height - 160)
        planes[y : y + 160, x : x + 160] = 230
        u = height + (height - 1 - y) // 4
        planes[u : u + 20, width // 2 : width // 2 + 80] = 60
        yield av.VideoFrame.from_ndarray(planes, format="yuv420p")


# ---- video source ---------------------------------------------------------------------------


def bench_index(source: Path, scratch: Path) -> tuple[VideoIndex, dict[str, float]]:
    started = time.perf_counter()
    index = VideoIndex.build(source)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    index.save(scratch / "index.npz")
    save_s = time.perf_counter() - started
    started = time.perf_counter()
    VideoIndex.load(scratch / "index.npz")
    figures = {
        "frames": index.num_frames,
        "keyframes": len(index.keyframes),
        "file MB": source.stat().st_size / 1e6,
        "index s": build_s,
        "save s": save_s,
        "load s": time.perf_counter() - started,
        "index KB": (scratch / "index.npz").stat().st_size / 1e3,
    }
    return index, figures


def bench_random(source: Path, index: VideoIndex, reads: int, seed: int) -> list[float]:
    """Seconds per read of a never-visited frame: one frame per GOP, random offset and order."""
    latencies = []
    with whole_video_reader(source, index) as reader:
        for k in unvisited_frames(index, reads, seed):
            started = time.perf_counter()
            reader.frame(k)
            latencies.append(time.perf_counter() - started)
    return latencies


def bench_walk(source: Path, index: VideoIndex, frames: int, backward: bool) -> float:
    """Frames/s through the reader walking ``frames`` frames one way from a GOP boundary."""
    frames = min(frames, index.num_frames)
    order = range(frames - 1, -1, -1) if backward else range(frames)
    with whole_video_reader(source, index) as reader:
        started = time.perf_counter()
        for k in order:
            reader.frame(k)
        return frames / (time.perf_counter() - started)


def bench_source(label: str, source: Path, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        index, figures = bench_index(source, Path(scratch))
    latencies = bench_random(source, index, args.reads, args.seed)
    figures |= _percentiles("random read", latencies)
    figures["forward frames/s"] = bench_walk(source, index, args.walk, backward=False)
    figures["backward frames/s"] = bench_walk(source, index, args.walk, backward=True)
    figures["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_figures(label, figures)
    return figures


def _percentiles(name: str, seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        f"{name} p50 ms": statistics.median(ms),
        f"{name} p95 ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        f"{name} max ms": ms[-1],
    }


# ---- SAM 2 ----------------------------------------------------------------------------------


def bench_sam2(image_size: int, source: Path, clicks: int) -> dict[str, float]:
    """SAM 2.1 tiny (random weights, fp32) on this CPU: ``forward_image`` on one frame, a bare
    click on a pre-extracted JPEG, and the engine's preprocessing of a decoded frame."""
    import torch

    from deployments.engine.frames import to_model_input
    from deployments.engine.models import load_predictor
    from deployments.engine.precision import model_context
    from deployments.protocol.settings import EngineSettings

    settings = EngineSettings(
        weights="random", image_size=image_size, device="cpu", compute_dtype="float32"
    )
    predictor = load_predictor(settings)
    frames = list(decode_bgr(source, clicks + 1))
    rgb = cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB)
    point = np.array([[SIZE[0] / 2, SIZE[1] / 2]], np.float32)
    with tempfile.TemporaryDirectory() as jpegs, model_context(predictor.device, torch.float32):
        write_jpegs(frames, Path(jpegs), quality=95)
        state = predictor.init_state(video_path=jpegs)
        tensor = to_model_input(rgb, image_size)
        predictor.forward_image(tensor[None])  # warm-up: first-call allocations
        encoder = repeat_timed(lambda: predictor.forward_image(tensor[None]), clicks)
        click = [bare_click_s(predictor, state, i, point) for i in range(1, clicks + 1)]
    prep = repeat_timed(lambda: to_model_input(rgb, image_size), clicks)
    figures = {
        "forward_image ms": statistics.median(encoder) * 1000,
        "bare click ms": statistics.median(click) * 1000,
        "preprocess ms": statistics.median(prep) * 1000,
    }
    title = f"SAM 2.1 tiny, fp32, image size {image_size}, {torch.get_num_threads()} threads"
    print_figures(title, figures)
    return figures


# ---- report ---------------------------------------------------------------------------------


def _verdict(reads: dict[str, dict[str, float]], sam: dict[int, dict[str, float]]) -> None:
    """A click on a never-visited frame against a bare click on a pre-extracted JPEG."""
    print("\nclick on a never-visited frame / bare click (bar: 1.5)")
    for label, figures in reads.items():
        for size, model in sam.items():
            extra = model["preprocess ms"]
            for stat in ("p50", "p95", "max"):
                read = figures[f"random read {stat} ms"]
                ratio = (read + extra + model["bare click ms"]) / model["bare click ms"]
                print(f"  {label:14} size {size:5} {stat}: {ratio:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=3600, help="Synthetic video length.")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vs_bench")
    parser.add_argument("--reads", type=int, default=40, help="Never-visited frames to read.")
    parser.add_argument("--walk", type=int, default=3000, help="Frames walked each way.")
    parser.add_argument("--loops", type=int, default=374, help="Loops of the footage (1 h).")
    parser.add_argument("--clicks", type=int, default=3, help="Model timings per size.")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 256])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sessions", action="store_true", help="Measure sessions through the engine instead."
    )
    parser.add_argument("--session-size", type=int, default=1024, help="Engine's image size.")
    parser.add_argument(
        "--session-clicks", type=int, default=8, help="Never-visited frames clicked per video."
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS after imports: {rss:.0f} MB")

    frames = args.seconds * FPS
    started = time.perf_counter()
    shapes = synthesize(args.cache / f"shapes_720p_gop{GOP}_{frames}.mp4", frames)
    print(f"synthetic video: {shapes} ({time.perf_counter() - started:.0f} s to make or find)")
    footage = loop_footage(FOOTAGE, args.cache / f"footage_loop{args.loops}.mp4", args.loops)
    if args.sessions:
        bench_sessions(args, shapes, frames, footage)
        return
    reads = {
        "synthetic": bench_source(f"synthetic 720p, {frames} frames", shapes, args),
        "footage": bench_source(f"real 720p footage, {args.loops} loops", footage, args),
    }
    sam = {size: bench_sam2(size, shapes, args.clicks) for size in args.sizes}
    _verdict(reads, sam)


if __name__ == "__main__":
    main()

"""Benchmark ``deployments.engine.video_source`` against SAM 2's own cost of a click.

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

With ``--sessions`` it measures the engine end to end instead (``SessionEngine`` at
``--session-size``, random weights, the compute dtype the engine picks): the time a 600-frame
1080p upload (``surgery_robotic.mp4`` looped by remuxing) takes to become a session and the
bytes the session stores beyond its source; the time from an hour-long upload being complete to
its first click answered; and clicks on never-visited frames (read from the source, as the
model always reads it) against bare SAM 2 clicks on pre-extracted JPEGs of the same frames,
both run on the engine's model thread, interleaved.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/bench_video_source.py
    python scripts/bench_video_source.py --sessions
"""

from __future__ import annotations

import os

# Before torch loads: a plain AVX2 CPU's kernels (the script sets them if the caller did not).
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import argparse
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np
from local_service import REPO

from deployments.engine.video_source import VideoIndex, VideoReader, select_frames
from deployments.protocol.types import VideoOptions

if TYPE_CHECKING:
    from deployments.engine import SessionEngine

SIZE = (1280, 720)
FPS = 30
GOP = 250
# x264's fastest preset keeps an hour's synthesis to minutes; B-frames kept so the index has
# to reorder, a fixed keyframe interval as x264's default (keyint 250) has at most.
X264 = {"preset": "ultrafast", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=3"}
FOOTAGE = (REPO / "../shared/videos/01_dog.mp4").resolve()
SURGERY = (REPO / "../shared/videos/surgery_robotic.mp4").resolve()
# What the JPEG ingest stored per 1080p frame before sessions indexed their video (issue 9).
OLD_JPEG_BYTES_PER_FRAME = 217 * 1024
# SAM 2's image normalisation, as the engine's FrameSource applies it before the encoder.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def synthesize(path: Path, num_frames: int) -> Path:
    """An H.264 MP4 of moving squares on a gradient, cached: made once per path."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options=X264)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for frame in _shapes(num_frames):
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
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
    selection = select_frames(index, VideoOptions(), max_frames=index.num_frames)
    rng = random.Random(seed)
    gops = rng.sample(range(len(index.keyframes)), min(reads, len(index.keyframes)))
    ends = [*index.keyframes[1:].tolist(), index.num_frames]
    frames = [rng.randrange(int(index.keyframes[g]), ends[g]) for g in gops]
    latencies = []
    with VideoReader(source, index, selection) as reader:
        for k in frames:
            started = time.perf_counter()
            reader.frame(k)
            latencies.append(time.perf_counter() - started)
    return latencies


def bench_walk(source: Path, index: VideoIndex, frames: int, backward: bool) -> float:
    """Frames/s through the reader walking ``frames`` frames one way from a GOP boundary."""
    selection = select_frames(index, VideoOptions(), max_frames=index.num_frames)
    frames = min(frames, index.num_frames)
    order = range(frames - 1, -1, -1) if backward else range(frames)
    with VideoReader(source, index, selection) as reader:
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
    _print(label, figures)
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

    from deployments.engine.models import load_predictor
    from deployments.engine.precision import model_context
    from deployments.protocol.settings import EngineSettings

    settings = EngineSettings(
        weights="random", image_size=image_size, device="cpu", compute_dtype="float32"
    )
    predictor = load_predictor(settings)
    frames = _first_frames(source, clicks + 1)
    with tempfile.TemporaryDirectory() as jpegs, model_context(predictor.device, torch.float32):
        for i, rgb in enumerate(frames):
            cv2.imwrite(f"{jpegs}/{i:05d}.jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        state = predictor.init_state(video_path=jpegs)
        tensor = _preprocess(frames[0], image_size)
        predictor.forward_image(tensor[None])  # warm-up: first-call allocations
        encoder = _timed(lambda: predictor.forward_image(tensor[None]), clicks)
        click = [_click(predictor, state, i) for i in range(1, clicks + 1)]
    prep = _timed(lambda: _preprocess(frames[0], image_size), clicks)
    figures = {
        "forward_image ms": statistics.median(encoder) * 1000,
        "bare click ms": statistics.median(click) * 1000,
        "preprocess ms": statistics.median(prep) * 1000,
    }
    _print(
        f"SAM 2.1 tiny, fp32, image size {image_size}, {torch.get_num_threads()} threads", figures
    )
    return figures


def _first_frames(source: Path, count: int) -> list[np.ndarray]:
    with av.open(str(source)) as container:
        frames = container.decode(video=0)
        return [next(frames).to_ndarray(format="rgb24") for _ in range(count)]


def _preprocess(rgb: np.ndarray, image_size: int) -> object:
    """What the engine's FrameSource does to a decoded frame before the image encoder."""
    import torch

    resized = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    normalised = (resized.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def _click(predictor: object, state: dict, frame: int) -> float:
    """One positive point on a frame whose features are not cached yet."""
    started = time.perf_counter()
    predictor.add_new_points_or_box(
        state, frame_idx=frame, obj_id=1, points=np.array([[640.0, 360.0]]), labels=np.array([1])
    )
    return time.perf_counter() - started


def _timed(fn: object, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


# ---- sessions: the engine end to end --------------------------------------------------------


def new_engine(root: Path, image_size: int) -> SessionEngine:
    """An engine as a replica runs it (random weights), warmed up by one image encoding."""
    import torch

    from deployments.engine import SessionEngine
    from deployments.protocol.settings import EngineSettings

    settings = EngineSettings(
        weights="random",
        image_size=image_size,
        device="cpu",
        storage_root=root,
        max_sessions=4,
        max_video_frames=200_000,  # the looped footage runs a few frames past an hour
    )
    engine = SessionEngine(settings)
    warm = torch.zeros(1, 3, image_size, image_size)
    engine.executor.run("warm-up", lambda: engine.predictor.forward_image(warm))
    return engine


def upload(engine: SessionEngine, video: Path) -> Path:
    """``video`` copied to where the ingress leaves a completed upload."""
    target = engine.settings.storage_root / ".uploads" / f"{time.monotonic_ns()}{video.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, target)
    return target


def bench_ready(engine: SessionEngine, video: Path) -> dict[str, float]:
    """Time for an upload to become a session, and what the session stores beside it."""
    uploaded = upload(engine, video)
    started = time.perf_counter()
    info = engine.create_session(uploaded, move=True)
    ready_s = time.perf_counter() - started
    directory = engine.session(info.session_id).directory
    stored = {p.name: p.stat().st_size for p in directory.iterdir()}
    source = stored.pop(f"source{video.suffix}")
    engine.delete_session(info.session_id)
    frames = info.video.num_frames
    beyond = sum(stored.values())
    return {
        "frames": frames,
        "session ready s": ready_s,
        "source KB/frame": source / frames / 1e3,
        "stored beyond source B/frame": beyond / frames,
        "of the old JPEG bytes": f"{100 * beyond / frames / OLD_JPEG_BYTES_PER_FRAME:.3f}%",
        **{f"  {name} B": size for name, size in sorted(stored.items())},
    }


def bench_first_click(engine: SessionEngine, video: Path, frame: int) -> dict[str, float]:
    """From a completed upload to the first click answered, on ``frame``."""
    from deployments.protocol import Prompt

    uploaded = upload(engine, video)
    started = time.perf_counter()
    info = engine.create_session(uploaded, move=True)
    ready_s = time.perf_counter() - started
    point = (info.video.width / 2, info.video.height / 2)
    engine.session(info.session_id).add_prompt(Prompt(frame_index=frame, points=[point]))
    total_s = time.perf_counter() - started
    engine.delete_session(info.session_id)
    return {
        "session ready s": ready_s,
        "first click s": total_s - ready_s,
        "upload complete to click answered s": total_s,
    }


def bench_unvisited_clicks(
    engine: SessionEngine, video: Path, clicks: int, seed: int
) -> dict[str, float]:
    """Clicks on never-visited frames (one per GOP, random offset) through the engine against
    bare SAM 2 clicks on JPEGs of the same frames extracted beforehand, alternately, both on
    the engine's model thread (same model, thread and dtype). Same object on both sides.

    SAM 2's own click time varies by +-20% from one click to the next on this CPU, so a pair's
    ratio is noisy; the read a never-visited frame adds (decoding from its keyframe to S x S and
    normalising, timed on a separate reader) over the median bare click is the steadier figure.
    """
    from deployments.protocol import Prompt

    index = VideoIndex.build(video)
    rng = random.Random(seed)
    ends = [*index.keyframes[1:].tolist(), index.num_frames]
    gops = sorted(rng.sample(range(len(index.keyframes)), clicks))
    frames = [rng.randrange(int(index.keyframes[g]), ends[g]) for g in gops]
    rng.shuffle(frames)
    point = np.array([[SIZE[0] / 2, SIZE[1] / 2]], np.float32)
    session = engine.session(engine.create_session(video).session_id)
    engine_s, bare_s = [], []
    others = _others_cpu_s()
    with tempfile.TemporaryDirectory() as jpegs:
        # JPEG 0 is a frame no click goes to: init_state caches its features as a warm-up.
        _extract_jpegs(video, index, [0, *frames], Path(jpegs))
        predictor = engine.predictor
        state = engine.executor.run("bare", lambda: predictor.init_state(video_path=jpegs))
        for i, frame in enumerate(frames, start=1):
            started = time.perf_counter()
            session.add_prompt(Prompt(frame_index=frame, obj_id=1, points=[tuple(point[0])]))
            engine_s.append(time.perf_counter() - started)
            bare = _bare_click(predictor, state, i, point)
            bare_s.append(engine.executor.run("bare", bare))
    others = _others_cpu_s() - others
    reads = _model_reads(session, video, index, frames, engine.predictor.image_size)
    engine.delete_session(session.id)
    ratios = sorted(e / b for e, b in zip(engine_s, bare_s, strict=True))
    bare = statistics.median(bare_s)
    return {
        "others CPU s meanwhile": others,
        "engine click p50 ms": statistics.median(engine_s) * 1000,
        "engine click max ms": max(engine_s) * 1000,
        "bare click p50 ms": bare * 1000,
        "bare click max ms": max(bare_s) * 1000,
        "frame read p50 ms": statistics.median(reads) * 1000,
        "frame read max ms": max(reads) * 1000,
        "p50 engine / p50 bare": f"{statistics.median(engine_s) / bare:.2f}",
        "(bare + read) / bare p50": f"{(bare + statistics.median(reads)) / bare:.2f}",
        "(bare + read) / bare max": f"{(bare + max(reads)) / bare:.2f}",
        "pair ratios": " ".join(f"{r:.2f}" for r in ratios),
    }


def _model_reads(
    session: object, video: Path, index: VideoIndex, frames: list[int], size: int
) -> list[float]:
    """Seconds to read each never-visited frame as the engine's model reader does (decode to
    S x S, normalise), on a reader of its own over the source."""
    from deployments.engine.frames import to_model_input

    selection = select_frames(index, VideoOptions(), max_frames=index.num_frames)
    seconds = []
    with VideoReader(video, index, selection, size=(size, size)) as reader:
        for frame in frames:
            started = time.perf_counter()
            to_model_input(reader.frame(frame), size)
            seconds.append(time.perf_counter() - started)
    return seconds


def _others_cpu_s() -> float:
    """CPU seconds other processes have used since boot (/proc/stat's busy time minus ours): a
    shared machine's noise, printed beside the timings it disturbs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return busy - time.process_time()


def _extract_jpegs(video: Path, index: VideoIndex, frames: list[int], folder: Path) -> None:
    """The frames (in the order given) as a SAM 2 JPEG folder, at the video's size."""
    selection = select_frames(index, VideoOptions(), max_frames=index.num_frames)
    with VideoReader(video, index, selection) as reader:
        for i, frame in enumerate(frames):
            bgr = cv2.cvtColor(reader.frame(frame), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])


def _bare_click(predictor: object, state: dict, frame: int, point: np.ndarray) -> object:
    def click() -> float:
        started = time.perf_counter()
        predictor.add_new_points_or_box(
            state, frame_idx=frame, obj_id=1, points=point, labels=np.array([1], np.int32)
        )
        return time.perf_counter() - started

    return click


def bench_sessions(args: argparse.Namespace, shapes: Path, footage: Path) -> None:
    import torch

    clip = loop_footage(SURGERY, args.cache / "surgery_loop30.mp4", 30)
    with tempfile.TemporaryDirectory(dir=args.cache) as root:
        engine = new_engine(Path(root), args.session_size)
        threads = torch.get_num_threads()
        title = f"image size {args.session_size}, {engine.compute_dtype}, {threads} threads"
        try:
            _print("600-frame 1080p upload (surgery_robotic.mp4 x 30)", bench_ready(engine, clip))
            length = f"{args.seconds} s"
            for frame in (0, shapes_frames(args) // 2 + 17):
                figures = bench_first_click(engine, shapes, frame)
                _print(f"{length} 720p upload, first click on frame {frame} ({title})", figures)
            videos = ((f"synthetic {length}", shapes), (f"footage x {args.loops}", footage))
            for label, video in videos:
                figures = bench_unvisited_clicks(engine, video, args.session_clicks, args.seed)
                _print(f"never-visited frames, {label}: engine / bare ({title})", figures)
        finally:
            engine.close()


def shapes_frames(args: argparse.Namespace) -> int:
    return args.seconds * FPS


# ---- report ---------------------------------------------------------------------------------


def _print(title: str, figures: dict[str, float]) -> None:
    print(f"\n{title}")
    for name, value in figures.items():
        print(
            f"  {name:24} {value:12.1f}" if isinstance(value, float) else f"  {name:24} {value:12}"
        )


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

    frames = shapes_frames(args)
    started = time.perf_counter()
    shapes = synthesize(args.cache / f"shapes_720p_gop{GOP}_{frames}.mp4", frames)
    print(f"synthetic video: {shapes} ({time.perf_counter() - started:.0f} s to make or find)")
    footage = loop_footage(FOOTAGE, args.cache / f"footage_loop{args.loops}.mp4", args.loops)
    if args.sessions:
        bench_sessions(args, shapes, footage)
        return
    reads = {
        "synthetic": bench_source(f"synthetic 720p, {frames} frames", shapes, args),
        "footage": bench_source(f"real 720p footage, {args.loops} loops", footage, args),
    }
    sam = {size: bench_sam2(size, shapes, args.clicks) for size in args.sizes}
    _verdict(reads, sam)


if __name__ == "__main__":
    main()

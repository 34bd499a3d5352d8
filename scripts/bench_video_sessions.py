"""Sessions end to end for ``bench_video_source.py --sessions``: the engine (``SessionEngine`` at
``--session-size``, random weights, the compute dtype the engine picks) on the videos that
script makes.

Measures the time a 600-frame 1080p upload (``surgery_robotic.mp4`` looped by remuxing) takes
to become a session and the bytes the session stores beyond its source; the time from an
hour-long upload being complete to its first click answered; and clicks on never-visited frames
(read from the source, as the model always reads it) against bare SAM 2 clicks on pre-extracted
JPEGs of the same frames, both run on the engine's model thread, interleaved.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from bench_common import (
    bare_click_s,
    loop_footage,
    print_figures,
    timed_block,
    unvisited_frames,
    whole_video_reader,
    write_jpegs,
)
from local_service import REPO

from deployments.engine.video_index import VideoIndex

if TYPE_CHECKING:
    from deployments.engine import SessionEngine
    from deployments.protocol.types import SessionInfo

SURGERY = (REPO / "../shared/videos/surgery_robotic.mp4").resolve()
# What the JPEG ingest stored per 1080p frame before sessions indexed their video (issue 9).
OLD_JPEG_BYTES_PER_FRAME = 217 * 1024


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


def _create_from_upload(engine: SessionEngine, video: Path) -> tuple[SessionInfo, float, float]:
    """A session on an upload of ``video``: its info, ``perf_counter`` when the upload was
    complete, and the seconds until the session was ready."""
    uploaded = upload(engine, video)
    started = time.perf_counter()
    info = engine.create_session(uploaded, move=True)
    return info, started, time.perf_counter() - started


def bench_ready(engine: SessionEngine, video: Path) -> dict[str, float]:
    """Time for an upload to become a session, and what the session stores beside it."""
    info, _, ready_s = _create_from_upload(engine, video)
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

    info, started, ready_s = _create_from_upload(engine, video)
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
    frames = unvisited_frames(index, clicks, seed)
    point = np.array([[index.width / 2, index.height / 2]], np.float32)
    session = engine.session(engine.create_session(video).session_id)
    engine_s, bare_s = [], []
    with tempfile.TemporaryDirectory() as jpegs, timed_block() as meanwhile:
        # JPEG 0 is a frame no click goes to: init_state caches its features as a warm-up.
        with whole_video_reader(video, index) as reader:
            bgr = (cv2.cvtColor(reader.frame(k), cv2.COLOR_RGB2BGR) for k in [0, *frames])
            write_jpegs(bgr, Path(jpegs), quality=95)
        predictor = engine.predictor
        state = engine.executor.run("bare", lambda: predictor.init_state(video_path=jpegs))
        for i, frame in enumerate(frames, start=1):
            started = time.perf_counter()
            session.add_prompt(Prompt(frame_index=frame, obj_id=1, points=[tuple(point[0])]))
            engine_s.append(time.perf_counter() - started)
            bare = engine.executor.run("bare", lambda i=i: bare_click_s(predictor, state, i, point))
            bare_s.append(bare)
    reads = _model_reads(video, index, frames, engine.predictor.image_size)
    engine.delete_session(session.id)
    ratios = sorted(e / b for e, b in zip(engine_s, bare_s, strict=True))
    bare = statistics.median(bare_s)
    return {
        "others CPU s meanwhile": meanwhile["others"],
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


def _model_reads(video: Path, index: VideoIndex, frames: list[int], size: int) -> list[float]:
    """Seconds to read each never-visited frame as the engine's model reader does (decode to
    S x S, normalise), on a reader of its own over the source."""
    from deployments.engine.frames import to_model_input

    seconds = []
    with whole_video_reader(video, index, size=(size, size)) as reader:
        for frame in frames:
            started = time.perf_counter()
            to_model_input(reader.frame(frame), size)
            seconds.append(time.perf_counter() - started)
    return seconds


def bench_sessions(
    args: argparse.Namespace, shapes: Path, shapes_frames: int, footage: Path
) -> None:
    """Every figure above, printed: the synthetic clip ``shapes`` has ``shapes_frames`` frames."""
    import torch

    clip = loop_footage(SURGERY, args.cache / "surgery_loop30.mp4", 30)
    with tempfile.TemporaryDirectory(dir=args.cache) as root:
        engine = new_engine(Path(root), args.session_size)
        threads = torch.get_num_threads()
        title = f"image size {args.session_size}, {engine.compute_dtype}, {threads} threads"
        try:
            figures = bench_ready(engine, clip)
            print_figures("600-frame 1080p upload (surgery_robotic.mp4 x 30)", figures)
            length = f"{args.seconds} s"
            for frame in (0, shapes_frames // 2 + 17):
                figures = bench_first_click(engine, shapes, frame)
                print_figures(
                    f"{length} 720p upload, first click on frame {frame} ({title})", figures
                )
            videos = ((f"synthetic {length}", shapes), (f"footage x {args.loops}", footage))
            for label, video in videos:
                figures = bench_unvisited_clicks(engine, video, args.session_clicks, args.seed)
                print_figures(f"never-visited frames, {label}: engine / bare ({title})", figures)
        finally:
            engine.close()

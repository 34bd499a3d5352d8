"""Benchmark a refinement click on a recently propagated frame: the engine, whose session keeps
the image features its propagation computed (``FeatureCache``), against a bare SAM 2
``add_new_points_or_box`` on the same frame in a predictor that has moved on from it (its
one-frame cache holds another frame), so it runs the image encoder again.

One process, one model (random weights, the engine's dtype and image size), one model thread:
the bare predictor's calls run on the engine's executor thread too, so both sides compute on the
same thread under the same ``precision.model_context``. Three sides on a clip's first frames:
bare SAM 2 on a JPEG folder (``init_state``, as in SAM 2's README); an engine session; a second
engine session whose cache budget is 0 (SAM 2's one frame), which shows how much of the
difference is the cache. Each side gets a click on frame 0, then rounds of a forward
propagation and one click on a propagated frame (never the last one, never one clicked
before): every timed click is the first correction after a propagation, with the same prompts
consolidated on every side. The engine's clicks include everything the
engine does for a click: SAM 2's own correction on the session's state, RLE encoding and
storing; the memory of each click, encoded on the model thread
right behind it, is left to finish before the next click is timed (as an annotator's pause
lets it). Ratios of medians are the figures; other processes' CPU time during each side's
clicks says how far to trust them.

    python scripts/bench_feature_cache.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before sam2 imports tqdm

import torch
from bench_common import JPEG_QUALITY, clip_geometry, decode_bgr, timed_block, write_jpegs
from local_service import cpu_flags, positive_int, write_section

from deployments.engine import EngineSession, SessionEngine
from deployments.protocol import EngineSettings, Prompt, PropagationRequest, VideoOptions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = (REPO / "../shared/videos/bedroom.mp4").resolve()
SECTION = (
    "## Click on a propagated frame: feature cache vs bare SAM 2 (scripts/bench_feature_cache.py)"
)
SIDES = ("bare", "cached", "uncached")


@dataclass
class Clicks:
    """Wall seconds of each click of one side, and other processes' CPU seconds meanwhile."""

    wall: list[float] = field(default_factory=list)
    others_cpu_s: float = 0.0

    def timed(self, click: Callable[[], object]) -> None:
        with timed_block() as timing:
            click()
        self.wall.append(timing["wall"])
        self.others_cpu_s += timing["others"]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


@dataclass
class Result:
    clicks: dict[str, Clicks]
    dtype: str
    frame_mib: float  # features one cached frame takes


class BareSide:
    """SAM 2 as its README uses it, on the engine's model thread."""

    def __init__(self, engine: SessionEngine, args: argparse.Namespace, folder: Path) -> None:
        self.engine, self.predictor = engine, engine.predictor
        write_jpegs(decode_bgr(args.video, args.frames), folder, JPEG_QUALITY)
        self.state = self._run(lambda: self.predictor.init_state(video_path=str(folder)))

    def _run(self, fn: Callable[[], object]) -> object:
        return self.engine.executor.run("bare", fn)

    def click(self, frame: int, point: tuple[float, float], label: int) -> None:
        def add() -> None:
            _, _, masks = self.predictor.add_new_points_or_box(
                self.state, frame, 1, points=[point], labels=[label], clear_old_points=False
            )
            (masks[:, 0] > 0).cpu().numpy()

        self._run(add)

    def propagate(self) -> int:
        def walk() -> int:
            count = 0
            for _, _, masks in self.predictor.propagate_in_video(self.state):
                (masks[:, 0] > 0).cpu().numpy()
                count += 1
            return count

        return self._run(walk)


def engine_session(engine: SessionEngine, args: argparse.Namespace, fps: float) -> EngineSession:
    info = engine.create_session(args.video, VideoOptions(end_time=args.frames / fps))
    if info.video.num_frames != args.frames:
        raise SystemExit(f"the engine kept {info.video.num_frames} frames, not {args.frames}")
    return engine.session(info.session_id)


def engine_click(
    session: EngineSession, frame: int, point: tuple[float, float], label: int
) -> None:
    session.add_prompt(Prompt(frame_index=frame, obj_id=1, points=[point], labels=[label]))


def click_frames(args: argparse.Namespace) -> list[int]:
    """Propagated frames to click on, from the end backwards, never the last one propagated
    (the bare predictor's one-frame cache holds that one) nor one clicked before."""
    frames = list(range(args.frames - 2, 0, -2))[: args.clicks]
    if len(frames) < args.clicks:
        raise SystemExit(f"{args.frames} frames leave room for {len(frames)} clicks")
    return frames


def propagate_all(bare: BareSide, sessions: tuple[EngineSession, ...], frames: int) -> None:
    """A forward propagation on every side: SAM 2 consolidates the prompts so far on each, so
    every side then holds the same conditioning frames."""
    counts = [bare.propagate()]
    for session in sessions:
        events = session.propagate(PropagationRequest(direction="forward", start_frame_index=0))
        counts.append(sum(event.type == "frame" for event in events))
    if counts != [frames] * len(counts):
        raise SystemExit(f"propagated {counts} frames, expected {frames} each")


def measure(args: argparse.Namespace) -> Result:
    """Rounds of a propagation on every side, then one timed click per side."""
    fps, width, height = clip_geometry(args.video)
    centre, correction = (width / 2, height / 2), (width * 0.3, height * 0.3)
    with tempfile.TemporaryDirectory(prefix="bench-feature-cache-") as root:
        settings = EngineSettings(
            weights="random",
            image_size=args.image_size,
            device="cpu",
            torch_threads=args.threads,
            storage_root=Path(root) / "sessions",
            max_sessions=2,
            feature_cache_mb=args.cache_mb,
            max_encoder_batch=1,
        )
        engine = SessionEngine(settings)
        try:
            folder = Path(root) / "jpeg"
            folder.mkdir()
            bare = BareSide(engine, args, folder)
            cached, uncached = (engine_session(engine, args, fps) for _ in range(2))
            uncached.feature_cache.max_bytes = 0  # SAM 2's one frame
            bare.click(0, centre, 1)
            for session in (cached, uncached):
                engine_click(session, 0, centre, 1)
            clicks = {side: Clicks() for side in SIDES}
            for turn, frame in enumerate(click_frames(args)):
                print(f"propagating, then clicking frame {frame} ...", file=sys.stderr, flush=True)
                propagate_all(bare, (cached, uncached), args.frames)
                click = {
                    "bare": lambda k=frame: bare.click(k, correction, 0),
                    "cached": lambda k=frame: engine_click(cached, k, correction, 0),
                    "uncached": lambda k=frame: engine_click(uncached, k, correction, 0),
                }
                misses = cached.feature_cache.misses
                for side in SIDES[turn % 3 :] + SIDES[: turn % 3]:  # each side first in turn
                    clicks[side].timed(click[side])
                    # What the click queued behind it (its memory, encoded ahead) ends before
                    # the next side's click is timed, as it does during an annotator's pause.
                    for session in (cached, uncached):
                        engine.executor.run(session.id, lambda: None)
                if cached.feature_cache.misses != misses:
                    raise SystemExit(f"the cached click on frame {frame} missed: widen --cache-mb")
            frame_mib = cached.feature_cache.nbytes / len(cached.feature_cache) / 2**20
            return Result(clicks, engine.compute_dtype, frame_mib)
        finally:
            engine.close()


def table(result: Result) -> str:
    """Each side's median click over the bare one's, its clicks over the bare clicks on the
    same frames, and how busy other processes kept the machine meanwhile."""
    clicks = result.clicks
    bare = clicks["bare"]
    rows = [
        "| side | median click / bare median | per frame / bare (median, range) | others' "
        "CPU-s per second of its clicks |",
        "|---|---|---|---|",
    ]
    titles = {
        "bare": "bare SAM 2 (image encoder runs)",
        "cached": "engine, feature cache",
        "uncached": "engine, budget 0 (encoder runs)",
    }
    for side, title in titles.items():
        pairs = [c / b for c, b in zip(clicks[side].wall, bare.wall, strict=True)]
        rows.append(
            f"| {title} | {clicks[side].median / bare.median:.3f} | "
            f"{statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f}) | "
            f"{clicks[side].others_cpu_s / sum(clicks[side].wall):.2f} |"
        )
    return "\n".join(rows)


def section(args: argparse.Namespace, result: Result) -> str:
    """The docs section: how to reproduce, where and when it ran, the figures."""
    command = "python " + shlex.join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (flags: {cpu_flags()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, torch threads: {args.threads}"
    )
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    return (
        f"{SECTION}\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {machine}. Date: {date}. Load average at the end: "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.\n\n"
        f"Clip `{args.video.name}`, first {args.frames} frames, sam2.1_hiera_tiny with random "
        f"weights at image size {args.image_size}, computing in {result.dtype} on every "
        "side, on one model thread. Each side: a click on frame 0, then "
        f"{args.clicks} rounds of a forward propagation and a negative click on a propagated "
        "frame (not the last one), so each click is the first correction after a propagation "
        "and every side holds the same prompts; the three sides click in turns, each side "
        "first in turn. Bare: "
        "`add_new_points_or_box` in a predictor whose one-frame cache holds another frame. "
        "Engine: `EngineSession.add_prompt` whole (SAM 2's own `add_new_points_or_box` on the "
        "session's state, RLE, MaskStore; the previous click's memory, encoded right behind "
        "it, done before the next side's click is timed), every click a feature-cache hit "
        f"({result.frame_mib:.1f} MiB of features per frame); budget 0: the same with "
        "SAM 2's one frame, so the encoder runs. Both sides attend to the same memories: the "
        "engine's click is stock SAM 2's correction (the propagation's outputs are within "
        "the retention window), so the difference is the image encoder. The bar "
        "(issues 13, 18): the cached click at most 0.5x the bare one. Other processes' CPU-s per "
        "second: 0 on a quiet machine, up to the number of CPUs when they keep it busy.\n\n"
        f"{table(result)}\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=positive_int, default=12, help="frames propagated")
    parser.add_argument("--clicks", type=positive_int, default=5, help="clicks per side")
    parser.add_argument("--image-size", type=positive_int, default=512)
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    parser.add_argument("--cache-mb", type=positive_int, default=256, help="feature_cache_mb")
    parser.add_argument("--write", type=Path, help="markdown file to put the results section in")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    result = measure(args)
    print(table(result))
    if args.write:
        write_section(args.write, SECTION, section(args, result))
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()

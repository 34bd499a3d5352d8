"""Benchmark the session engine against a bare SAM 2 ``SAM2VideoPredictor`` on one clip.

Both sides build the same random-weight model through ``load_predictor`` (same config, seed,
image size and overrides) and compute in the same dtype, the one the engine picks on this
machine (``precision.resolve_compute_dtype``: bf16 on CUDA and native-bf16 CPUs, fp32
elsewhere, e.g. with ``ATEN_CPU_CAPABILITY=avx2``), under the same ``precision.model_context``.
So the difference measured is what the engine adds: frames decoded on demand from the video,
the executor thread, the MaskStore. Each side runs in its own subprocess, so its peak RSS is
its own; the parent runs them one after the other (never in parallel), which on a small CPU
machine makes the ratio the figure to trust.

    python scripts/bench_engine.py --repeats 5 --avx2-too --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bench_common import JPEG_QUALITY, clip_geometry, decode_bgr, timed_block, write_jpegs
from local_service import AVX2_CAP, REPO, cpu_flags, positive_int, write_section

if TYPE_CHECKING:
    from deployments.protocol import EngineSettings

DEFAULT_VIDEO = (REPO / "../shared/videos/bedroom.mp4").resolve()
SECTION = "## Engine vs bare SAM2VideoPredictor (scripts/bench_engine.py)"
# How to read the table, under it in the docs.
READING = (
    "Bar (issues 8 and 9): ratio engine/bare at least 0.95 in each dtype. One run's ratio "
    "spreads by +-5% on a 2-core VM, and the side run second tended to be the slower: "
    "hence alternating sides and the median. In float32 the engine's peak RSS is higher by "
    "its feature cache (`feature_cache_mb`: the features of the frames it computed last, so a "
    "click on them skips the image encoder), smaller under bf16 autocast. The engine "
    "runs as served, with the default settings: it decodes the source on demand and keeps "
    "SAM 2's outputs within its retention window."
)
# What a side reports: figures, plus the torch build and threads it ran with.
Figures = dict[str, float | int | str]
# (key in the side's JSON, column title) of the report table, in order.
COLUMNS = (
    ("bare_fps", "frames/s bare"),
    ("engine_fps", "frames/s engine"),
    ("ratio", "ratio engine/bare"),
    ("bare_rss_mb", "peak RSS bare MB"),
    ("engine_rss_mb", "peak RSS engine MB"),
    ("decode_s", "OpenCV decode s"),
    ("start_s", "engine session start s"),
    ("init_state_s", "bare init_state s"),
)


# ---- one side (child process) ----------------------------------------------------------------


def _settings(args: argparse.Namespace, storage_root: Path | None = None) -> EngineSettings:
    """One settings object for both sides, so load_predictor builds identical models."""
    from deployments.protocol import EngineSettings

    extra = {"storage_root": storage_root, "max_sessions": 1} if storage_root else {}
    return EngineSettings(
        weights="random",
        image_size=args.image_size,
        device="cpu",
        torch_threads=args.threads,
        **extra,
    )


def run_bare(args: argparse.Namespace) -> Figures:
    """SAM 2 as its README uses it: a JPEG folder, init_state, one click, propagate_in_video."""
    import torch

    from deployments.engine.models import load_predictor
    from deployments.engine.precision import model_context, resolve_compute_dtype

    torch.set_num_threads(args.threads)
    settings = _settings(args)
    device = torch.device(settings.device)
    dtype = resolve_compute_dtype(settings.compute_dtype, device)
    predictor = load_predictor(settings)
    _, width, height = clip_geometry(args.video)
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as folder:
        write_jpegs(decode_bgr(args.video, args.frames), Path(folder), JPEG_QUALITY)
        with model_context(device, dtype):
            began = time.perf_counter()
            state = predictor.init_state(video_path=folder)
            init_state_s = time.perf_counter() - began
            predictor.add_new_points_or_box(
                state, 0, 1, points=[[width / 2, height / 2]], labels=[1]
            )
            count = 0
            with timed_block() as timing:
                for _, _, masks in predictor.propagate_in_video(state):
                    (masks[:, 0] > 0).cpu().numpy()
                    count += 1
    figures = _side_figures("bare", count, args.frames, timing, str(dtype).removeprefix("torch."))
    return {**figures, "init_state_s": init_state_s}


def run_engine(args: argparse.Namespace) -> Figures:
    """The engine end to end: create_session on the mp4, one click, a forward propagation."""
    from deployments.engine import SessionEngine
    from deployments.protocol import FrameMasks, Prompt, PropagationRequest, VideoOptions

    fps, width, height = clip_geometry(args.video)
    began = time.perf_counter()
    for _ in decode_bgr(args.video, args.frames):
        pass
    decode_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as root:
        engine = SessionEngine(_settings(args, storage_root=Path(root)))
        dtype = engine.compute_dtype
        try:
            began = time.perf_counter()
            info = engine.create_session(args.video, VideoOptions(end_time=args.frames / fps))
            start_s = time.perf_counter() - began
            if info.video.num_frames != args.frames:
                raise SystemExit(f"engine kept {info.video.num_frames} frames, not {args.frames}")
            session = engine.session(info.session_id)
            session.add_prompt(Prompt(frame_index=0, points=[(width / 2, height / 2)]))
            with timed_block() as timing:
                events = session.propagate(PropagationRequest(direction="forward"))
                count = sum(isinstance(event, FrameMasks) for event in events)
        finally:
            engine.close()
    figures = _side_figures("engine", count, args.frames, timing, dtype)
    return {**figures, "decode_s": decode_s, "start_s": start_s}


def _side_figures(
    side: str, count: int, expected: int, timing: dict[str, float], dtype: str
) -> Figures:
    """A side's propagation (``expected`` frames, or it fails), the dtype it computed in, its
    peak RSS (ru_maxrss is KiB on Linux) and the torch build and threads actually used."""
    import torch

    if count != expected:
        raise SystemExit(f"{side} propagation yielded {count} frames, expected {expected}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        f"{side}_fps": count / timing["wall"],
        f"{side}_others_cpu_s": timing["others"],
        f"{side}_dtype": dtype,
        f"{side}_rss_mb": peak_kib / 1024,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# ---- parent: run the sides, report ---------------------------------------------------------


def _side_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--video={args.video}",
        f"--frames={args.frames}",
        f"--image-size={args.image_size}",
        f"--threads={args.threads}",
    ]


def _run_side(side: str, args: argparse.Namespace, env: dict[str, str]) -> Figures:
    """One side in a fresh interpreter, with ``env`` added to the environment; its last stdout
    line is its JSON result."""
    print(f"running {side} ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        [sys.executable, __file__, f"--side={side}", *_side_args(args)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, env: dict[str, str]) -> Figures:
    """Bare and engine ``repeats`` times each, one after the other, the first side alternating
    (a machine that slows down over the run then costs both sides alike); medians of every
    figure, and each run's ratio."""
    runs = []
    for n in range(args.repeats):
        order = ("bare", "engine") if n % 2 == 0 else ("engine", "bare")
        run = {key: value for side in order for key, value in _run_side(side, args, env).items()}
        run["ratio"] = run["engine_fps"] / run["bare_fps"]
        runs.append(run)
        print(f"run {len(runs)}: ratio {run['ratio']:.3f}", file=sys.stderr, flush=True)
        if run["bare_dtype"] != run["engine_dtype"]:
            raise SystemExit(f"the sides computed in different dtypes: {run}")
    keys = [key for key, _ in COLUMNS] + ["bare_others_cpu_s", "engine_others_cpu_s"]
    result: Figures = {key: statistics.median(run[key] for run in runs) for key in keys}
    result.update(
        runs=", ".join(f"{run['ratio']:.3f}" for run in runs),
        torch=runs[0]["torch"],
        torch_threads=runs[0]["torch_threads"],
        compute_dtype=runs[0]["engine_dtype"],
    )
    return result


def configurations(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The CPU setups to measure, by name: as the machine is, and with ``--avx2-too`` also
    capped at AVX2 (no native bf16, so the engine's fp32 path) where the machine is not."""
    setups = {"native": {}}
    if args.avx2_too:
        setups["capped at AVX2"] = AVX2_CAP
    return setups


def contention(result: Figures) -> str:
    """How busy the rest of the machine was while each side propagated."""
    return (
        f"other processes took {result['bare_others_cpu_s']:.1f} CPU-s during the bare "
        f"propagation and {result['engine_others_cpu_s']:.1f} CPU-s during the engine's "
        "(0 on a quiet machine; more makes the ratio unreliable)"
    )


def table(results: dict[str, Figures]) -> str:
    """One row per CPU setup, as a markdown table (also what the terminal shows)."""
    head = "| CPU | dtype | " + " | ".join(title for _, title in COLUMNS) + " | ratio per run |"
    rule = "|" + "---|" * (len(COLUMNS) + 3)
    digits = {"ratio": 3, "bare_fps": 3, "engine_fps": 3}
    rows = [
        f"| {name} | {result['compute_dtype']} | "
        + " | ".join(f"{result[k]:.{digits.get(k, 2)}f}" for k, _ in COLUMNS)
        + f" | {result['runs']} |"
        for name, result in results.items()
    ]
    return "\n".join([head, rule, *rows])


def section(args: argparse.Namespace, results: dict[str, Figures]) -> str:
    """The docs section: how to reproduce, where and when it ran, the figures."""
    command = "python " + shlex.join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    first = next(iter(results.values()))
    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (flags: {cpu_flags()}), Python {platform.python_version()}, "
        f"torch {first['torch']}, {first['torch_threads']} torch threads"
    )
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    busy = "; ".join(f"{name}: {contention(result)}" for name, result in results.items())
    return (
        f"{SECTION}\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {machine}. Date: {date}.\n\n"
        f"Clip `{args.video.name}`, first {args.frames} frames, sam2.1_hiera_tiny with random "
        f"weights at image size {args.image_size}, both sides computing in the dtype the "
        "engine picks for the CPU setup, one click at the frame centre, forward propagation; "
        f"medians of {args.repeats} run(s) per side, sides run one after the other, the first "
        "side alternating. `capped at AVX2` runs both sides with "
        "`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`. Session start is "
        "`create_session` (index the video, open its readers: no decoding) against a plain "
        "OpenCV decode of the same frames; bare init_state includes SAM 2 loading every frame "
        f"and encoding frame 0. Contention: {busy}.\n\n"
        f"{table(results)}\n\n"
        f"{READING}\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=positive_int, default=60)
    parser.add_argument("--image-size", type=positive_int, default=512)
    parser.add_argument(
        "--threads", type=positive_int, default=2, help="torch threads on both sides"
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=1, help="runs per side; medians reported"
    )
    parser.add_argument(
        "--avx2-too",
        action="store_true",
        help="also measure with the CPU capped at AVX2 (the fp32 path of CPUs without bf16)",
    )
    parser.add_argument("--write", type=Path, help="markdown file to put the results section in")
    parser.add_argument("--side", choices=("bare", "engine"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.side:
        os.environ["TQDM_DISABLE"] = "1"  # before sam2 imports tqdm
        run = run_bare if args.side == "bare" else run_engine
        print(json.dumps(run(args)))
        return
    results = {name: measure(args, env) for name, env in configurations(args).items()}
    print(table(results))
    for name, result in results.items():
        print(f"{name}: {contention(result)}")
    if args.write:
        write_section(args.write, SECTION, section(args, results))
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Speed and memory of the SAM 3 concept detector (``deployments.detector``) on a real video.

    python scripts/bench_detector.py --write docs/benchmarks.md          # on a CUDA machine
    python scripts/bench_detector.py --smoke --write docs/benchmarks.md  # anywhere: it runs

``load_detector`` builds SAM 3: by default random weights at facebook/sam3's full architecture
and 1008 px (its real speed and memory, meaningless masks). Frames of a clip from
../shared/videos, decoded with PyAV at their own size (cycled if short), each get one text
prompt (``ConceptDetector.detect``, post-processing included). Reported: detections/s over N
calls (warm-up excluded), latency p50/p95, peak CUDA memory (``max_memory_allocated``) or peak
RSS on a CPU, parameters, dtype, device. ``--smoke`` (and any run without CUDA unless
``--device cpu``): the small architecture at 224 px on the CPU for a few frames, labelled a
CPU smoke run: it proves the script runs and says nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import cycle, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from bench_common import timed_block
from bench_serve import percentile
from local_service import REPO, cpu_flags, positive_int, write_section

if TYPE_CHECKING:
    from deployments.protocol.settings import DetectorSettings

SECTION = "## Concept detector (scripts/bench_detector.py)"
DEFAULT_VIDEO = (REPO / "../shared/videos/surgery_robotic.mp4").resolve()
MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    smoke: bool
    video: Path
    text: str
    frames: int
    warmup: int
    settings: DetectorSettings


def decode_rgb(video: Path, count: int) -> list[np.ndarray]:
    """Up to ``count`` RGB frames from the start of ``video``, at their own size."""
    with av.open(str(video)) as container:
        frames = container.decode(container.streams.video[0])
        rgb = [frame.to_ndarray(format="rgb24") for frame in islice(frames, count)]
    if not rgb:
        raise SystemExit(f"no frames decoded from {video}")
    return rgb


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc/self/status)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def full_parameters() -> int:
    """Parameters of facebook/sam3's architecture, counted on the meta device (nothing built)."""
    import torch
    from transformers import Sam3Model

    from deployments.detector.random_model import build_config, build_tokenizer
    from deployments.protocol.settings import DetectorSettings

    settings = DetectorSettings(weights="random", random_architecture="full")
    with torch.device("meta"):
        model = Sam3Model(build_config(settings, build_tokenizer()))
    return sum(p.numel() for p in model.parameters())


def measure(plan: Plan) -> dict[str, Any]:
    """Load the detector, warm it up, then time ``plan.frames`` text-prompted detections."""
    import torch

    from deployments.detector import load_detector

    frames = decode_rgb(plan.video, plan.warmup + plan.frames)
    began = time.perf_counter()
    detector = load_detector(plan.settings)
    load_s = time.perf_counter() - began
    cuda = detector.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        model_mb = torch.cuda.memory_allocated(detector.device) / MB
        torch.cuda.reset_peak_memory_stats(detector.device)
    else:
        model_mb = rss_mb()
    stream = cycle(frames)

    def detect() -> tuple[float, int]:
        started = time.perf_counter()
        found = detector.detect(next(stream), plan.text)
        sync()
        return time.perf_counter() - started, len(found)

    warmup = [detect()[0] for _ in range(plan.warmup)]
    with timed_block() as block:
        calls = [detect() for _ in range(plan.frames)]
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(detector.device) / MB
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    latencies = [seconds for seconds, _ in calls]
    return {
        "device": torch.cuda.get_device_name(detector.device) if cuda else "cpu",
        "cuda": cuda,
        "dtype": str(detector.dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in detector.model.parameters()),
        "image_size": detector.spec.size,
        "video_size": "{1}x{0}".format(*frames[0].shape),
        "distinct_frames": len(frames),
        "load_s": load_s,
        "warmup_s": sum(warmup),
        "detections_per_s": plan.frames / block["wall"],
        "others_cpu_s": block["others"],
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "instances_mean": sum(n for _, n in calls) / len(calls),
        "model_mb": model_mb,
        "peak_mb": peak_mb,
    }


def report(plan: Plan, figures: dict[str, Any], command: str) -> str:
    """The markdown section: what ran where, then the figures as a table."""
    import torch
    import transformers

    settings = plan.settings
    random = settings.weights == "random"
    architecture = f"{settings.random_architecture} architecture, " if random else ""
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu = f"GPU {figures['device']}" if figures["cuda"] else "no GPU used"
    memory = "CUDA MB" if figures["cuda"] else "RSS MB (process)"
    rows = [
        [f"detections/s ({plan.frames} calls, {plan.warmup} warm-up excluded)",
         f"{figures['detections_per_s']:.2f}"],
        ["latency per call p50 / p95 s",
         f"{figures['p50_s']:.3f} / {figures['p95_s']:.3f}"],
        [f"after load, {memory}", f"{figures['model_mb']:.0f}"],
        [f"peak, {memory}", f"{figures['peak_mb']:.0f}"],
        ["parameters", f"{figures['parameters']:,}"],
        ["dtype / device", f"{figures['dtype']} / {figures['device']}"],
        ["model load s / warm-up s", f"{figures['load_s']:.1f} / {figures['warmup_s']:.1f}"],
        ["instances per call (mean)", f"{figures['instances_mean']:.1f}"],
        ["CPU s other processes took while timing", f"{figures['others_cpu_s']:.1f}"],
    ]  # fmt: skip
    lines = [
        SECTION,
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs (flags: {cpu_flags()}), {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"(threads: {torch.get_num_threads()}), transformers {transformers.__version__}. "
        f"Date: {date}.",
        "",
        f"SAM 3 (transformers `Sam3Model` via `load_detector`), {settings.weights} weights, "
        f"{architecture}input {figures['image_size']} px; frames of "
        f"`{plan.video.name}` ({figures['video_size']}, {figures['distinct_frames']} distinct, "
        f'cycled), text prompt "{plan.text}", score threshold {settings.score_threshold:g}, one '
        "`detect` call per frame with post-processing (masks upsampled to the frame). With "
        "random weights the instance count, and so the post-processing share, is arbitrary.",
    ]
    if plan.smoke:
        why = "smoke run" if torch.cuda.is_available() else "no CUDA device in this task"
        lines[2:2] = [
            "**CPU smoke run**: a tiny scale on the CPU, to show the script runs. These are "
            "not speed or memory figures for SAM 3.",
            "",
        ]
        lines += [
            "",
            f"Full-size figures (full architecture, {full_parameters():,} parameters, at "
            f"1008 px) need a GPU and were not measured ({why}): run "
            "`python scripts/bench_detector.py --write docs/benchmarks.md` on a CUDA machine.",
        ]
    table = ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join([*lines, "", *table]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small model on the CPU")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--text", default="surgical instrument", help="the text prompt")
    parser.add_argument("--frames", type=positive_int, help="timed calls (default 50, smoke 3)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default 3, smoke 1)")
    parser.add_argument("--weights", choices=("random", "checkpoint"), default="random")
    parser.add_argument("--architecture", choices=("small", "full"), help="random weights")
    parser.add_argument("--image-size", type=positive_int, help="default 1008, smoke 224")
    parser.add_argument("--device", help="auto, cpu, cuda:N (default auto, smoke cpu)")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    parser.add_argument("--threads", type=positive_int, help="torch threads (smoke: 1)")
    parser.add_argument("--score-threshold", type=float, help="default settings', smoke 0")
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    args = parser.parse_args(argv)
    if (args.frames or 2) < 2 or (args.warmup or 0) < 0:
        parser.error("--frames must be at least 2 (for p50/p95), --warmup at least 0")
    return args


def make_plan(args: argparse.Namespace, cuda: bool) -> Plan:
    """The run's plan: the flags given over the smoke or full-size defaults."""
    from deployments.protocol.settings import DetectorSettings

    smoke = args.smoke or (not cuda and args.device is None)
    threshold = 0.0 if smoke and args.score_threshold is None else args.score_threshold
    chosen = {} if threshold is None else {"score_threshold": threshold}
    return Plan(
        smoke=smoke,
        video=args.video,
        text=args.text,
        frames=args.frames or (3 if smoke else 50),
        warmup=args.warmup if args.warmup is not None else (1 if smoke else 3),
        settings=DetectorSettings(
            weights=args.weights,
            random_architecture=args.architecture or ("small" if smoke else "full"),
            image_size=args.image_size or (224 if smoke else 1008),
            checkpoint_dir=REPO / "checkpoints" / "sam3",
            device=args.device or ("cpu" if smoke else "auto"),
            compute_dtype=args.dtype,
            torch_threads=args.threads or (1 if smoke else None),
            **chosen,  # smoke: threshold 0, so every query is post-processed
        ),
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    plan = make_plan(args, torch.cuda.is_available())
    if plan.smoke and not args.smoke:
        print("no CUDA device here: running the CPU smoke run instead", file=sys.stderr)
    figures = measure(plan)
    given = sys.argv[1:] if argv is None else argv
    command = "python " + shlex.join([os.path.relpath(__file__, REPO), *given])
    text = report(plan, figures, command)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()

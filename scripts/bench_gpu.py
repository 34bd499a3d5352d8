"""GPU throughput, click latency and memory of SAM 2 sessions, eager and compiled (issue 13).

    python scripts/bench_gpu.py --write docs/benchmarks.md              # on a CUDA machine
    python scripts/bench_gpu.py --cpu-smoke --write docs/benchmarks.md  # anywhere: it runs

On CUDA, for each model (tiny, small, base_plus, large at 1024 by default) and each ``compile``
setting (none and full by default):

1. One replica: one ``SessionEngine`` in a child process of its own (so CUDA memory figures
   are its own and no compiled code of the previous model lingers), 1, 2 and 3 sessions
   propagating at once from threads: frames/s per session and in aggregate.
2. Click latency p50/p95 on one session (each click on a frame never visited), idle and while
   the other sessions propagate.
3. Under the first compile setting only (eager by default): CUDA memory of one session over
   the loaded model (allocated, and peak) and SAM 2 state bytes, at 1k and 10k frames of one
   propagation.
4. Eager only, 1 replica holding every session against one replica per session at
   ``num_gpus`` 0.33, through Ray Serve on this GPU (``local_service.serve_locally``: the real
   ingress, session router and replicas, propagations streamed over HTTP). Serve, not engine
   processes started by hand: fractional GPUs, placement and routing are what a deployment
   runs, and the HTTP cost is small (docs/benchmarks.md, bench_serve.py).

Without CUDA, or with ``--cpu-smoke``, the same code runs at a tiny scale (tiny at image size
128, a few dozen frames, 1-2 sessions, 1-2 CPU replicas) and writes a section of its own,
labelled a CPU smoke run: it shows the script works and says nothing about GPUs. Weights are
random by default (a checkpoint's speed and memory are the same); ``--weights checkpoint``
reads them from checkpoints/. Videos are synthesized with ``soak_long_video.synthesize``.

The engine measurements are in ``bench_gpu_engine.py``, the report in ``bench_gpu_report.py``.
The SAM 3 concept detector (text prompts: detections/s at 1008 px, latency, memory) has its own:
``scripts/bench_detector.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_common import concurrently
from bench_gpu_engine import MODEL_PREFIX, Figures, Plan, clips, run_config, throughput
from bench_gpu_report import SECTION, SMOKE_SECTION, report
from local_service import REPO, serve_locally, write_section

GPU_SCALE = {
    "models": ("tiny", "small", "base_plus", "large"),
    "compile_modes": ("none", "full"),
    "image_size": 1024,
    "video_size": (1024, 576),
    "frames": 300,
    "sessions": (1, 2, 3),
    "memory_frames": (1_000, 10_000),
    "replicas": (1, 3),
    "replica_num_gpus": 0.33,
    "clicks": 20,
    "torch_threads": None,
}
SMOKE_SCALE = {
    "models": ("tiny",),
    "compile_modes": ("none",),
    "image_size": 128,
    "video_size": (160, 120),
    "frames": 24,
    "sessions": (1, 2),
    "memory_frames": (12, 36),
    "replicas": (1, 2),
    "replica_num_gpus": 0.0,
    "clicks": 4,
    "torch_threads": 1,
}


# ---- parent: children per configuration, then Serve ----------------------------------------


def run_child(plan: Plan, model: str, mode: str) -> Figures:
    """One configuration in a fresh interpreter; its last stdout line is its JSON. A failure
    (out of memory, a compile error) is reported, not fatal: the other configurations run."""
    print(f"{model} compile={mode} ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps([asdict(plan), model, mode])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    if out.returncode != 0:
        return {"model": model, "compile": mode, "error": f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve_settings(plan: Plan, model: str, replicas: int, storage: Path) -> dict[str, Any]:
    """``replicas`` replicas sharing ``max(plan.replicas)`` sessions evenly."""
    total = max(plan.replicas)
    values: dict[str, Any] = {
        "model": MODEL_PREFIX + model,
        "weights": plan.weights,
        "checkpoint_dir": str(REPO / "checkpoints"),
        "image_size": plan.image_size,
        "device": "cpu" if plan.smoke else "auto",
        "torch_threads": plan.torch_threads,
        "storage_root": str(storage),
        "max_sessions": -(-total // replicas),
        "min_replicas": replicas,
        "max_replicas": replicas,
        "replica_num_gpus": plan.replica_num_gpus,
        "replica_num_cpus": 0,
        "ingress_num_cpus": 0,
    }
    return values | plan.settings


def http_propagate(base: str, session_id: str, frames: int) -> tuple[int, float]:
    """(frames, seconds) of a forward propagation streamed over NDJSON, one client each."""
    from sam2serve import Client

    with Client(base) as client:
        began = time.perf_counter()
        stream = client.propagate_stream(
            session_id, direction="forward", start_frame_index=0, max_frames=frames - 1
        )
        count = sum(1 for _ in stream)
        return count, time.perf_counter() - began


def run_replicas(plan: Plan, model: str, replicas: int) -> Figures:
    """Every session propagating at once through Serve on ``replicas`` replicas."""
    from sam2serve import Client

    video, _ = clips(plan)
    width, height = plan.video_size
    with tempfile.TemporaryDirectory(prefix="bench-gpu-serve-") as storage:
        settings = serve_settings(plan, model, replicas, Path(storage))
        with serve_locally(settings, plan.port, "bench-gpu") as base, Client(base) as client:
            ids = [client.create_session(video).session_id for _ in range(max(plan.replicas))]
            for session_id in ids:
                client.add_prompt(session_id, 0, points=[(width / 2, height / 2)], labels=[1])
            calls = [lambda s=s: http_propagate(base, s, plan.frames) for s in ids]
            runs, wall = concurrently(calls)
            entry = next(m for m in client.models().models if m.name == MODEL_PREFIX + model)
    return {
        "model": model,
        "replicas": replicas,
        "replicas_up": len(entry.replicas),
        "warmup_s": entry.warmup_s,
        **throughput(runs, wall),
    }


def measure(plan: Plan, serve: bool) -> Figures:
    configs = [run_child(plan, m, c) for m in plan.models for c in plan.compile_modes]
    served = [run_replicas(plan, m, r) for m in plan.models for r in plan.replicas] if serve else []
    return {"configs": configs, "served": served}


# ---- command line ------------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The SAM 3 concept detector: scripts/bench_detector.py (--smoke on a CPU).",
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny scale on the CPU")
    parser.add_argument("--models", type=_csv, help="of tiny,small,base_plus,large")
    parser.add_argument("--compile", type=_csv, help="of none,encoder,full (first: memory)")
    parser.add_argument("--weights", choices=("random", "checkpoint"), default="random")
    parser.add_argument("--frames", type=int, help="frames per propagation")
    parser.add_argument("--memory-frames", type=lambda t: tuple(map(int, _csv(t))))
    parser.add_argument("--setting", action="append", default=[], help="KEY=VALUE, repeatable")
    parser.add_argument("--no-serve", action="store_true", help="skip the Ray Serve replicas")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "sam2-bench-gpu"))
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace, cuda: bool) -> Plan:
    smoke = args.cpu_smoke or not cuda
    scale: dict[str, Any] = dict(SMOKE_SCALE if smoke else GPU_SCALE)
    chosen = {"models": args.models, "compile_modes": args.compile, "frames": args.frames}
    chosen["memory_frames"] = args.memory_frames
    scale |= {key: value for key, value in chosen.items() if value}
    settings = dict(item.split("=", 1) for item in args.setting)
    return Plan(
        smoke=smoke, weights=args.weights, settings=settings, cache=args.cache, port=args.port,
        **scale,
    )  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.child:
        plan_fields, model, mode = json.loads(args.child)
        plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan_fields.items()})
        print(json.dumps(run_config(plan, model, mode)))
        return
    import torch

    cuda = torch.cuda.is_available()
    plan = make_plan(args, cuda)
    if plan.smoke and not args.cpu_smoke:
        print("no CUDA device here: running the CPU smoke run instead", file=sys.stderr)
    result = measure(plan, serve=not args.no_serve)
    command = "python " + shlex.join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    text = report(plan, result, command)
    print(text)
    if args.write:
        write_section(args.write, SMOKE_SECTION if plan.smoke else SECTION, text)
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()

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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench_serve import percentile
from local_service import REPO, serve_locally, write_section
from soak_long_video import centre_click, synthesize, timed

from deployments.engine import Session, SessionEngine
from deployments.protocol import EngineSettings, PropagationRequest

T = TypeVar("T")
SECTION = "## GPU throughput, click latency and memory (scripts/bench_gpu.py)"
SMOKE_SECTION = "## bench_gpu.py CPU smoke run: proves the script runs, not GPU figures"
MODEL_PREFIX = "sam2.1_hiera_"
MIB = 2**20
Figures = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What one run measures, and at what scale."""

    smoke: bool
    models: tuple[str, ...]
    compile_modes: tuple[str, ...]
    weights: str
    image_size: int
    video_size: tuple[int, int]
    frames: int  # per session and propagation in the throughput runs
    sessions: tuple[int, ...]
    memory_frames: tuple[int, ...]
    replicas: tuple[int, ...]
    replica_num_gpus: float
    clicks: int
    torch_threads: int | None
    settings: dict[str, str]  # --setting KEY=VALUE: extra engine and service settings
    cache: str
    port: int


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


# ---- one replica: an engine in a child process ---------------------------------------------


def engine_settings(plan: Plan, model: str, mode: str, storage: Path) -> EngineSettings:
    values: dict[str, Any] = {
        "model": MODEL_PREFIX + model,
        "weights": plan.weights,
        "checkpoint_dir": REPO / "checkpoints",
        "image_size": plan.image_size,
        "device": "cpu" if plan.smoke else "cuda",
        "torch_threads": plan.torch_threads,
        "storage_root": storage,
        "max_sessions": max(plan.sessions),
        "compile": mode,
    }
    return EngineSettings(**(values | plan.settings))


@contextmanager
def sessions(engine: SessionEngine, video: Path, count: int) -> Iterator[list[Session]]:
    """``count`` sessions on ``video``, each with one object clicked on frame 0; deleted after."""
    opened = [engine.session(engine.create_session(video).session_id) for _ in range(count)]
    try:
        for session in opened:
            session.add_prompt(centre_click(session, 0, 1))
        yield opened
    finally:
        for session in opened:
            engine.delete_session(session.id)


def propagate(session: Session, frames: int) -> tuple[int, float]:
    """(frames computed, seconds) of a forward propagation of ``frames`` frames from 0."""
    request = PropagationRequest(direction="forward", start_frame_index=0, max_frames=frames - 1)
    began = time.perf_counter()
    count = sum(event.type == "frame" for event in session.propagate(request))
    return count, time.perf_counter() - began


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


def throughput(runs: list[tuple[int, float]], wall: float) -> Figures:
    """Per-session frames/s and the aggregate (all frames over the wall time of all)."""
    per_session = [frames / seconds for frames, seconds in runs]
    return {
        "sessions": len(runs),
        "per_session_fps": per_session,
        "aggregate_fps": sum(frames for frames, _ in runs) / wall,
    }


def engine_throughput(engine: SessionEngine, video: Path, plan: Plan, count: int) -> Figures:
    with sessions(engine, video, count) as group:
        calls = [lambda s=s: propagate(s, plan.frames) for s in group]
        runs, wall = concurrently(calls)
    return throughput(runs, wall)


def click_latency(engine: SessionEngine, video: Path, plan: Plan, others: int) -> list[float]:
    """Seconds of clicks on one session, each on a frame never visited, while ``others``
    sessions propagate; only clicks started while they still ran count."""
    with sessions(engine, video, others + 1) as (clicker, *busy):
        threads = [threading.Thread(target=propagate, args=(s, plan.frames)) for s in busy]
        for thread in threads:
            thread.start()
        latencies = []
        try:
            for frame in _spread(plan.clicks, plan.frames):
                if threads and not any(t.is_alive() for t in threads):
                    break
                click = centre_click(clicker, frame, 1)
                latencies.append(timed(lambda c=click: clicker.add_prompt(c)))
        finally:
            for thread in threads:
                thread.join()
    return latencies


def _spread(count: int, frames: int) -> list[int]:
    """``count`` distinct frames spread over 1..frames-1 (frame 0 is clicked already)."""
    step = max((frames - 1) // count, 1)
    return list(range(1, frames, step))[:count]


class CudaMemory:
    """CUDA memory over a baseline; None off CUDA (the SAM 2 state column still counts)."""

    def __init__(self, device: Any) -> None:
        import torch

        self._cuda = torch.cuda if device.type == "cuda" else None
        self._device = device
        self.base = 0
        if self._cuda:
            self._cuda.synchronize(device)
            self.base = self._cuda.memory_allocated(device)
            self._cuda.reset_peak_memory_stats(device)

    def allocated_mb(self) -> float | None:
        return self._over_base("memory_allocated")

    def peak_mb(self) -> float | None:
        """Peak since this object was made (it resets torch's peak)."""
        return self._over_base("max_memory_allocated")

    def _over_base(self, reader: str) -> float | None:
        if self._cuda is None:
            return None
        return (getattr(self._cuda, reader)(self._device) - self.base) / MIB


def session_memory(engine: SessionEngine, video: Path, plan: Plan) -> list[Figures]:
    """One session's memory at each of ``plan.memory_frames`` frames of one propagation."""
    memory = CudaMemory(engine.predictor.device)
    rows: list[Figures] = []
    with sessions(engine, video, 1) as [session]:
        last = max(plan.memory_frames)
        request = PropagationRequest(direction="forward", start_frame_index=0, max_frames=last - 1)
        done = 0
        for event in session.propagate(request):
            done += event.type == "frame"
            if event.type == "frame" and done in plan.memory_frames:
                rows.append(
                    {
                        "frames": done,
                        "allocated_mb": memory.allocated_mb(),
                        "peak_mb": memory.peak_mb(),
                        "state_mb": session.state_nbytes() / MIB,
                    }
                )
    return rows


def run_config(plan: Plan, model: str, mode: str) -> Figures:
    """Everything measured on one engine (the child process's work)."""
    short, long = clips(plan)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as storage:
        before = CudaMemory(_device(plan))
        began = time.perf_counter()
        engine = SessionEngine(engine_settings(plan, model, mode, Path(storage)))
        figures: Figures = {
            "model": model,
            "compile": mode,
            "start_s": time.perf_counter() - began,
            "warmup_s": engine.warmup_s,
            "model_mb": before.allocated_mb(),
            "compute_dtype": engine.compute_dtype,
            **device_info(plan),
        }
        try:
            figures["throughput"] = [
                engine_throughput(engine, short, plan, n) for n in plan.sessions
            ]
            figures["clicks_idle"] = click_latency(engine, short, plan, 0)
            figures["clicks_busy"] = click_latency(engine, short, plan, max(plan.sessions) - 1)
            if mode == plan.compile_modes[0]:
                figures["memory"] = session_memory(engine, long, plan)
        finally:
            engine.close()
    return figures


def _device(plan: Plan) -> Any:
    import torch

    return torch.device("cpu" if plan.smoke else "cuda")


def device_info(plan: Plan) -> Figures:
    import torch

    if plan.smoke:
        return {"device": f"CPU ({os.cpu_count()} cores)", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": f"{props.name}, {props.total_memory / 2**30:.0f} GiB",
        "gpu_total_mb": props.total_memory / MIB,
        "torch": torch.__version__,
    }


def clips(plan: Plan) -> tuple[Path, Path]:
    """The throughput clip (one frame more than a propagation) and the memory clip."""
    cache = Path(plan.cache)
    cache.mkdir(parents=True, exist_ok=True)
    width, height = plan.video_size
    paths = []
    for frames in (plan.frames + 1, max(plan.memory_frames) + 1):
        path = cache / f"bench_gpu_{frames}_{width}x{height}.mp4"
        synthesize(path, frames, plan.video_size)
        paths.append(path)
    return paths[0], paths[1]


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


# ---- report ----------------------------------------------------------------------------------


def _fps(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _latency(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.3f} / {percentile(values, 95):.3f} ({len(values)})"


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def engine_table(configs: list[Figures]) -> list[str]:
    columns = ["model", "compile", "start s (warm-up s)", "sessions"]
    columns += ["frames/s per session (mean, min-max)", "aggregate frames/s"]
    columns += ["aggregate / 1 session"]
    rows = []
    for c in configs:
        if "error" in c:
            rows.append([c["model"], c["compile"], f"failed: {c['error']}", "", "", "", ""])
            continue
        start = f"{c['start_s']:.1f} ({c['warmup_s']:.1f})"
        single = c["throughput"][0]["aggregate_fps"]
        for run in c["throughput"]:
            aggregate = run["aggregate_fps"]
            per_session = _fps(run["per_session_fps"])
            rows.append([c["model"], c["compile"], start, str(run["sessions"]), per_session])
            rows[-1] += [f"{aggregate:.2f}", f"{aggregate / single:.2f}"]
    return _table(columns, rows)


def click_table(configs: list[Figures], others: int) -> list[str]:
    columns = ["model", "compile", "click p50 / p95 s idle (clicks)"]
    columns.append(f"with {others} other session(s) propagating")
    rows = [
        [c["model"], c["compile"], _latency(c["clicks_idle"]), _latency(c["clicks_busy"])]
        for c in configs
        if "error" not in c
    ]
    return _table(columns, rows)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def memory_table(configs: list[Figures]) -> list[str]:
    columns = ["model", "model CUDA MB", "frames", "session CUDA MB allocated"]
    columns += ["session CUDA MB peak", "SAM 2 state MB"]
    rows = [_memory_row(c, row) for c in configs for row in c.get("memory", [])]
    return _table(columns, rows)


def _memory_row(config: Figures, row: Figures) -> list[str]:
    return [
        config["model"],
        _mb(config["model_mb"]),
        str(row["frames"]),
        _mb(row["allocated_mb"]),
        _mb(row["peak_mb"]),
        f"{row['state_mb']:.1f}",
    ]


def served_table(served: list[Figures], plan: Plan) -> list[str]:
    columns = ["model", "replicas x num_gpus (up)", "sessions", "replica warm-up s"]
    columns += ["frames/s per session (mean, min-max)", "aggregate frames/s"]
    rows = []
    for s in served:
        shape = f"{s['replicas']} x {plan.replica_num_gpus:g} ({s['replicas_up']})"
        warmup = "-" if s["warmup_s"] is None else f"{s['warmup_s']:.1f}"
        rows.append([s["model"], shape, str(s["sessions"]), warmup])
        rows[-1] += [_fps(s["per_session_fps"]), f"{s['aggregate_fps']:.2f}"]
    return _table(columns, rows)


def report(plan: Plan, result: Figures, command: str) -> str:
    configs = result["configs"]
    first = next((c for c in configs if "error" not in c), {})
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SMOKE_SECTION if plan.smoke else SECTION,
        "",
        f"Command: `{command}`",
        "",
        f"Device: {first.get('device', '?')}; {platform.platform()}, torch "
        f"{first.get('torch', '?')}, computing in {first.get('compute_dtype', '?')}. "
        f"Date: {date}.",
        "",
        _scope(plan),
        "",
        *engine_table(configs),
        "",
        *click_table(configs, max(plan.sessions) - 1),
        "",
        *memory_table(configs),
    ]
    if result["served"]:
        lines += ["", *served_table(result["served"], plan)]
    return "\n".join(lines) + "\n"


def _scope(plan: Plan) -> str:
    width, height = plan.video_size
    text = (
        f"Models sam2.1 {', '.join(plan.models)} with {plan.weights} weights at image size "
        f"{plan.image_size}; synthetic H.264 {width}x{height}; one object per session clicked "
        f"on frame 0, forward propagations of {plan.frames} frames; click latency on frames "
        "never visited, p50 / p95 (count); memory of one session over the loaded model, "
        f"compile {plan.compile_modes[0]}, at {' and '.join(map(str, plan.memory_frames))} "
        "frames; replicas through Ray Serve, compile none. "
        f"Extra settings: {plan.settings or 'none'}."
    )
    if plan.smoke:
        text = (
            "**CPU smoke run**: the script's code paths at a tiny scale on a CPU, to show it "
            "runs. These are not GPU figures and size nothing; run it on a CUDA machine for "
            "those. " + text
        )
    return text


# ---- command line ------------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

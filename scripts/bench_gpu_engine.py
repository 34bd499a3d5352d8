"""What ``bench_gpu.py`` measures on one engine, in a child process of its own: sessions
propagating at once (frames/s), click latency idle and while others propagate, and one
session's memory over a long propagation. ``Plan`` says what a run measures and at what scale.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import concurrently, timed
from local_service import REPO
from soak_long_video import centre_click, synthesize

from deployments.engine import EngineSession, SessionEngine
from deployments.protocol import EngineSettings, PropagationRequest

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
def sessions(engine: SessionEngine, video: Path, count: int) -> Iterator[list[EngineSession]]:
    """``count`` sessions on ``video``, each with one object clicked on frame 0; deleted after."""
    opened = [engine.session(engine.create_session(video).session_id) for _ in range(count)]
    try:
        for session in opened:
            session.add_prompt(centre_click(session, 0, 1))
        yield opened
    finally:
        for session in opened:
            engine.delete_session(session.id)


def propagate(session: EngineSession, frames: int) -> tuple[int, float]:
    """(frames computed, seconds) of a forward propagation of ``frames`` frames from 0."""
    request = PropagationRequest(direction="forward", start_frame_index=0, max_frames=frames - 1)
    began = time.perf_counter()
    count = sum(event.type == "frame" for event in session.propagate(request))
    return count, time.perf_counter() - began


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

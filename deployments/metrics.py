"""Prometheus metrics of a SAM 2 replica (``ray.serve.metrics``; Serve adds the deployment,
replica and application tags, Ray exports them with a ``ray_`` prefix), and the stats it
publishes to the session router and ``/health``."""

from __future__ import annotations

import os
from typing import Any

import torch
from ray.serve.metrics import Counter, Gauge, Histogram

from deployments.engine import SessionEngine
from deployments.protocol import PropagationDone, ServiceSettings


def replica_stats(engine: SessionEngine, settings: ServiceSettings, replica: str) -> dict[str, Any]:
    """What a replica publishes: read by the ingress's session router (placement) and by
    /health and /api/v1/models."""
    return {
        "replica": replica,
        "pid": os.getpid(),
        "model": engine.model_name,
        "device": str(engine.predictor.device),
        "compute_dtype": engine.compute_dtype,
        "compile": settings.compile,
        "warmup_s": round(engine.warmup_s or 0.0, 2),
        "active_sessions": engine.active_sessions,
        "max_sessions": settings.max_sessions,
        "free_slots": engine.free_slots,
        "sessions": engine.session_ids(),
        "queued": engine.executor.queued(),
        "gpu_memory_mb": _gpu_memory_mb(engine.predictor.device),
    }


def _gpu_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.memory_allocated(device) / 2**20, 1)


class ReplicaMetrics:
    def __init__(self, model: str) -> None:
        self.active_sessions = Gauge(
            "sam2_active_sessions", "Sessions held by the replica.", tag_keys=("model",)
        )
        self.frames_propagated = Counter(
            "sam2_frames_propagated", "Frames computed by propagations.", tag_keys=("model",)
        )
        self.click_latency = Histogram(
            "sam2_click_latency_s",
            "Time to apply a prompt and return its masks.",
            boundaries=[0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10],
            tag_keys=("model",),
        )
        self.propagation_fps = Gauge(
            "sam2_propagation_fps",
            "Frames/s of the last finished propagation.",
            tag_keys=("model",),
        )
        for metric in (
            self.active_sessions,
            self.frames_propagated,
            self.click_latency,
            self.propagation_fps,
        ):
            metric.set_default_tags({"model": model})  # a new dict each: Serve adds to it

    def record_propagation(self, done: PropagationDone) -> None:
        if done.frames and done.elapsed_s > 0:
            self.propagation_fps.set(done.frames / done.elapsed_s)

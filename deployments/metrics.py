"""Prometheus metrics of a SAM 2 replica (``ray.serve.metrics``; Serve adds the deployment,
replica and application tags, Ray exports them with a ``ray_`` prefix)."""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram


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

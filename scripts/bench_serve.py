"""Benchmark serving over HTTP against the bare in-process engine, on the same clip and settings.

In-process: ``SessionEngine`` in this process. Served: a local Ray cluster, ``serve.run`` of the
app with one SAM 2 replica (same settings), requests over HTTP through the Serve proxy and the
ingress. The same clicks (each on a new frame, so each encodes a frame) and one forward
propagation streamed as NDJSON. One side after the other in one run, so the ratios are the
figures to trust on a small CPU machine.

    python scripts/bench_serve.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_service import REPO, serve_locally, write_section

DEFAULT_VIDEO = (REPO / "../shared/videos/bedroom.mp4").resolve()
SECTION = "## Serving over HTTP vs the in-process engine (scripts/bench_serve.py)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=40, help="frames of the clip to keep")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clicks", type=int, default=12)
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    return parser.parse_args()


def settings(args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    return {
        "weights": "random",
        "image_size": args.image_size,
        "device": "cpu",
        "torch_threads": args.threads,
        "storage_root": str(storage),
        "max_sessions": 1,
        "min_replicas": 1,
        "max_replicas": 1,
        "replica_num_cpus": 0,
        "ingress_num_cpus": 0,
    }


def clip_end_time(video: Path, frames: int) -> float:
    import cv2

    fps = cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS)
    return frames / fps


def click_plan(args: argparse.Namespace, width: int, height: int) -> list[dict[str, Any]]:
    """Clicks on successive frames (each encodes a new frame), alternating two objects."""
    step = max(1, args.frames // args.clicks)
    return [
        {
            "frame_index": (i * step) % args.frames,
            "obj_id": 1 + i % 2,
            "points": [[width * (0.3 + 0.4 * (i % 2)), height * 0.5]],
            "labels": [1],
        }
        for i in range(args.clicks)
    ]


def run_engine(args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    from deployments.engine import SessionEngine
    from deployments.protocol import Prompt, PropagationRequest, ServiceSettings, VideoOptions

    engine = SessionEngine(ServiceSettings(**settings(args, storage)))
    try:
        options = VideoOptions(end_time=clip_end_time(args.video, args.frames))
        info = engine.create_session(args.video, options)
        session = engine.session(info.session_id)
        latencies = []
        for click in click_plan(args, info.video.width, info.video.height):
            started = time.perf_counter()
            session.add_prompt(Prompt(**click))
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        frames = sum(
            1
            for event in session.propagate(
                PropagationRequest(direction="forward", start_frame_index=0)
            )
            if event.type == "frame"
        )
        elapsed = time.perf_counter() - started
        return {"fps": frames / elapsed, "frames": frames, "clicks": latencies}
    finally:
        engine.close()


def run_served(args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    import httpx

    with serve_locally(settings(args, storage), port=8765, name="bench") as base:
        return _drive_http(args, httpx.Client(base_url=base, timeout=600))


def _drive_http(args: argparse.Namespace, client: Any) -> dict[str, Any]:
    end_time = clip_end_time(args.video, args.frames)
    with args.video.open("rb") as data:
        created = client.post(
            "/api/v1/sessions",
            files={"file": (args.video.name, data)},
            data={"end_time": str(end_time)},
        )
    created.raise_for_status()
    session = created.json()
    base = f"/api/v1/sessions/{session['session_id']}"
    latencies = []
    for click in click_plan(args, session["video"]["width"], session["video"]["height"]):
        started = time.perf_counter()
        client.post(f"{base}/prompts", json=click).raise_for_status()
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    frames = 0
    with client.stream(
        "POST",
        f"{base}/propagate",
        json={"direction": "forward", "start_frame_index": 0},
        headers={"Accept": "application/x-ndjson"},
    ) as response:
        for line in response.iter_lines():
            frames += bool(line) and json.loads(line)["type"] == "frame"
    elapsed = time.perf_counter() - started
    client.delete(base)
    return {"fps": frames / elapsed, "frames": frames, "clicks": latencies}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(args: argparse.Namespace, engine: dict[str, Any], served: dict[str, Any]) -> str:
    import torch

    rows = [
        ("propagation frames/s", engine["fps"], served["fps"], served["fps"] / engine["fps"]),
        *(
            (
                f"click latency p{q} s",
                percentile(engine["clicks"], q),
                percentile(served["clicks"], q),
                percentile(served["clicks"], q) / percentile(engine["clicks"], q),
            )
            for q in (50, 95)
        ),
    ]
    table = "\n".join(f"| {name} | {a:.3f} | {b:.3f} | {r:.3f} |" for name, a, b, r in rows)
    command = "python scripts/bench_serve.py " + " ".join(sys.argv[1:])
    return (
        f"{SECTION}\n\n"
        f"Command: `{command.strip()}`\n\n"
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} torch threads. Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"Clip `{args.video.name}`, first {args.frames} frames, sam2.1_hiera_tiny with random "
        f"weights at image size {args.image_size}; {args.clicks} clicks (each on a new frame), "
        "then one forward propagation from frame 0. Served: one SAM 2 replica behind the ingress "
        "on a local Ray cluster, propagation streamed as NDJSON, latencies measured by the HTTP "
        "client. Goal: served/in-process frames/s >= 0.95.\n\n"
        "| figure | in-process engine | served over HTTP | served / engine |\n"
        "|---|---|---|---|\n"
        f"{table}\n"
    )


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = run_engine(args, Path(tmp) / "engine")
        served = run_served(args, Path(tmp) / "served")
    section = report(args, engine, served)
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()

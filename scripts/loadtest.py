"""Load test: N simulated annotators against the service on a local Ray cluster. Each uploads a
short clip from ../shared/videos/, clicks 3 times on 2 objects, propagates both ways (NDJSON
stream), exports a PNG ZIP and deletes the session. With more users than session slots, the
users over capacity get 503 with Retry-After and retry. Reports successes, 503s, click latency
p50/p95, propagation frames/s, and the replicas' RSS before and after (all sessions deleted).

    python scripts/loadtest.py --users 12 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from local_service import REPO, serve_locally, write_section

VIDEOS = (REPO / "../shared/videos").resolve()
CLIPS = ("bedroom.mp4", "01_dog.mp4", "05_default_juggle.mp4", "surgery_robotic.mp4")
SECTION = "## Load test (scripts/loadtest.py)"


@dataclass
class Tally:
    successes: int = 0
    errors: list[str] = field(default_factory=list)
    rejected_503: int = 0
    clicks: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sessions-per-replica", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5, help="clip length to upload")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--port", type=int, default=8150)
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    return parser.parse_args()


def settings(args: argparse.Namespace, storage: Path) -> dict:
    return {
        "weights": "random",
        "image_size": args.image_size,
        "device": "cpu",
        "torch_threads": 1,
        "storage_root": str(storage),
        "min_replicas": args.replicas,
        "max_replicas": args.replicas,
        "max_sessions": args.sessions_per_replica,
        "replica_num_cpus": 0,
        "ingress_num_cpus": 0,
        "retry_after_s": 2,
    }


async def user(client, index: int, args: argparse.Namespace, tally: Tally) -> None:
    clip = VIDEOS / CLIPS[index % len(CLIPS)]
    form = {"end_time": str(args.seconds), "max_side": "320"}
    while True:
        with clip.open("rb") as data:
            created = await client.post(
                "/api/v1/sessions", files={"file": (clip.name, data)}, data=form
            )
        if created.status_code != 503:
            break
        tally.rejected_503 += 1
        await asyncio.sleep(float(created.headers["Retry-After"]))
    if created.status_code != 201:
        tally.errors.append(f"create {created.status_code}")
        return
    session = created.json()
    base = f"/api/v1/sessions/{session['session_id']}"
    video = session["video"]
    try:
        await _annotate(client, base, video, tally)
        tally.successes += 1
    except AssertionError as exc:
        tally.errors.append(str(exc))
    finally:
        await client.delete(base)


async def _annotate(client, base: str, video: dict, tally: Tally) -> None:
    width, height, last = video["width"], video["height"], video["num_frames"] - 1
    for obj_id, frame, x in ((1, 0, 0.3), (2, 0, 0.7), (1, min(5, last), 0.35)):
        started = time.perf_counter()
        click = await client.post(
            f"{base}/prompts",
            json={"frame_index": frame, "obj_id": obj_id, "points": [[width * x, height * 0.5]]},
        )
        tally.clicks.append(time.perf_counter() - started)
        assert click.status_code == 200, f"click {click.status_code}"
    started, frames = time.perf_counter(), 0
    async with client.stream(
        "POST",
        f"{base}/propagate",
        json={"direction": "both"},
        headers={"Accept": "application/x-ndjson"},
    ) as stream:
        assert stream.status_code == 200, f"propagate {stream.status_code}"
        async for line in stream.aiter_lines():
            if line:
                event = json.loads(line)
                assert event["type"] != "error", f"propagate error {event}"
                frames += event["type"] == "frame"
    tally.fps.append(frames / (time.perf_counter() - started))
    export = await client.get(f"{base}/export", params={"format": "png_zip"})
    assert export.status_code == 200 and export.content[:2] == b"PK", "export"


def replica_rss_mb(app: str) -> dict[int, float]:
    """Each SAM 2 replica's RSS in MB, by process id."""
    import psutil

    rss = {}
    for process in psutil.process_iter(["cmdline"]):
        if any(f"ServeReplica:{app}:SAM2Replica" in p for p in process.info["cmdline"] or ()):
            rss[process.pid] = process.memory_info().rss / 2**20
    return rss


async def drive(args: argparse.Namespace) -> tuple[Tally, dict, dict, float]:
    import httpx

    base = f"http://127.0.0.1:{args.port}"
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await _warm_up(client, args)
        before = replica_rss_mb("load")
        tally, started = Tally(), time.perf_counter()
        await asyncio.gather(*(user(client, i, args, tally) for i in range(args.users)))
        elapsed = time.perf_counter() - started
        await asyncio.sleep(3)
        return tally, before, replica_rss_mb("load"), elapsed


async def _warm_up(client, args: argparse.Namespace) -> None:
    """One session per replica first, so the RSS baseline has the model and code loaded."""
    warm = Tally()
    await asyncio.gather(*(user(client, i, args, warm) for i in range(args.replicas)))


def report(
    args: argparse.Namespace, tally: Tally, rss_before: dict, rss_after: dict, elapsed: float
):
    import torch

    before, after = sum(rss_before.values()), sum(rss_after.values())
    # Replicas that lived through the run (the same process before and after).
    ratios = [rss_after[pid] / rss_before[pid] for pid in rss_before if pid in rss_after]

    q = statistics.quantiles(tally.clicks, n=100, method="inclusive")
    command = "python scripts/loadtest.py " + " ".join(sys.argv[1:])
    capacity = args.replicas * args.sessions_per_replica
    rows = [
        ("users", args.users),
        ("session slots", capacity),
        ("successes", tally.successes),
        ("errors", len(tally.errors)),
        ("503 answers (retried)", tally.rejected_503),
        ("click latency p50 s", f"{q[49]:.3f}"),
        ("click latency p95 s", f"{q[94]:.3f}"),
        ("propagation frames/s per user (median)", f"{statistics.median(tally.fps):.2f}"),
        ("wall time s", f"{elapsed:.1f}"),
        ("replicas' RSS before MB", f"{before:.0f}"),
        ("replicas' RSS after MB", f"{after:.0f}"),
        ("RSS after / before", f"{after / before:.3f}"),
        ("largest replica's RSS after / before", f"{max(ratios):.3f}" if ratios else "-"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"{SECTION}\n\nCommand: `{command.strip()}`\n\n"
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}. "
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"{args.replicas} SAM 2 replicas ({args.sessions_per_replica} sessions each) on a local "
        f"Ray cluster, sam2.1_hiera_tiny with random weights at image size {args.image_size}, "
        f"torch threads 1 per replica; each user uploads the first {args.seconds}s of a clip "
        "from ../shared/videos/ (max_side 320), clicks 3 times on 2 objects, propagates both "
        "ways (NDJSON), exports a PNG ZIP and deletes the session. RSS is measured after one "
        "warm-up session per replica and again after every session is deleted.\n\n"
        "| figure | value |\n|---|---|\n"
        f"{table}\n" + (f"\nErrors: {tally.errors}\n" if tally.errors else "")
    )


def main() -> int:
    args = parse_args()
    with (
        tempfile.TemporaryDirectory() as storage,
        serve_locally(settings(args, Path(storage)), args.port, "load"),
    ):
        tally, before, after, elapsed = asyncio.run(drive(args))
    section = report(args, tally, before, after, elapsed)
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""The MaskStore on SQLite and on PostgreSQL, side by side in one run: an hour of masks
(108,000 frames x 10 objects) written as a propagation writes them (one ``put`` of a frame's
objects per transaction; the first ``--put-frames`` of them timed that way, the rest loaded
1,000 frames per transaction), then the reads the service makes over it, timed on both: range
reads, pages, the review list and an object's timeline. Last, whether 3 sessions propagating at
100 frames/s with 10 objects each (3,000 masks/s) are sustained.

PostgreSQL is Debian's, started by the script on a temporary directory with its default
durability (fsync and synchronous commits on), as tests/postgres_server.py starts it.

    python scripts/bench_mask_store.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from local_service import cpu_flags, positive_int, write_section

from deployments.engine.mask_store import MaskStore, SqliteMaskStore, encode_masks
from deployments.engine.mask_store.postgres import MaskDatabase
from deployments.protocol.types import FrameMask
from tests.postgres_server import PostgresServer

SECTION = "## MaskStore: SQLite and PostgreSQL (scripts/bench_mask_store.py)"
HEIGHT, WIDTH = 720, 1280
VARIANTS = 30  # distinct frames of masks, cycled (objects move, so iou_prev is a real IoU)


def frame_masks(objects: int) -> list[list[FrameMask]]:
    """``VARIANTS`` frames of ``objects`` ellipses at 720p moving a few pixels a frame."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    frames = []
    for step in range(VARIANTS):
        masks = np.stack(
            [
                ((xx - 100 - 110 * o - 3 * step) / (40 + 5 * o)) ** 2
                + ((yy - 360 - 2 * step) / 80) ** 2
                <= 1
                for o in range(objects)
            ]
        )
        sources = ["propagation"] * objects
        frames.append(encode_masks(list(range(1, objects + 1)), masks, [0.9] * objects, sources, 1))
    return frames


def write(store: MaskStore, masks: list[list[FrameMask]], frames: int, put_frames: int) -> dict:
    """Frames 0..put_frames-1 one put each (timed), the rest 1,000 per transaction."""
    latencies = []
    began = time.perf_counter()
    for frame in range(min(put_frames, frames)):
        started = time.perf_counter()
        store.put(frame, masks[frame % VARIANTS])
        latencies.append(time.perf_counter() - started)
    put_s = time.perf_counter() - began
    began = time.perf_counter()
    for first in range(put_frames, frames, 1000):
        last = min(first + 1000, frames)
        store.put_frames((f, masks[f % VARIANTS]) for f in range(first, last))
    bulk_s = time.perf_counter() - began
    objects = len(masks[0])
    done = min(put_frames, frames)
    return {
        "put_fps": done / put_s,
        "put_mps": done * objects / put_s,
        "put_p50_ms": 1000 * statistics.median(latencies),
        "put_p99_ms": 1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))],
        "bulk_fps": (frames - done) / bulk_s if frames > done else float("nan"),
    }


def reads(store: MaskStore, frames: int, objects: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each read the service makes."""
    middle = frames // 2
    calls: dict[str, Callable[[], object]] = {
        "range: 100 frames, every object": lambda: list(store.frames(middle, middle + 99)),
        "range: 1,000 frames, one object": lambda: list(store.frames(middle, middle + 999, 7)),
        "page: 500 frames, every object": lambda: store.page(middle, None, None, 500),
        "page: 2,000 frames, one object": lambda: store.page(middle, None, 3, 2000),
        "review: every object": lambda: store.review(0.5, 0.5),
        "timeline: one object (ranges + review)": lambda: (
            store.ranges(5),
            store.review(0.5, 0.5, 5),
        ),
        "masked frames per object": store.masked_frames,
    }
    out = {}
    for name, call in calls.items():
        call()  # warm
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        out[name] = 1000 * statistics.median(times)
    return out


def sustain(open_store: Callable[[], MaskStore], masks, sessions: int, fps: int, seconds: float):
    """``sessions`` threads, each putting ``fps`` frames a second for ``seconds``: the frames
    each wrote on time, and how far the slowest fell behind its schedule at the end (s)."""
    stores = [open_store() for _ in range(sessions)]
    lags, written = [0.0] * sessions, [0] * sessions
    start = time.perf_counter() + 0.2

    def run(index: int) -> None:
        store = stores[index]
        for frame in range(int(fps * seconds)):
            due = start + frame / fps
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            store.put(frame, masks[frame % VARIANTS])
            written[index] += 1
        lags[index] = max(0.0, time.perf_counter() - (start + seconds))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.drop()
    return sum(written) / (max(lags) + seconds), max(lags)


def measure(args: argparse.Namespace, root: Path) -> dict:
    masks = frame_masks(args.objects)
    server = PostgresServer(durable=True).start()
    database = MaskDatabase(server.url, pool_size=args.pool_size)
    results: dict = {"rle_bytes": statistics.mean(len(m.rle.counts) for m in masks[0])}
    try:
        stores: dict[str, MaskStore] = {
            "sqlite": SqliteMaskStore(root / "masks.sqlite"),
            "postgres": database.store(f"bench-{uuid.uuid4().hex}"),
        }
        for name, store in stores.items():
            print(f"writing {args.frames} frames into {name}", flush=True)
            results[name] = write(store, masks, args.frames, args.put_frames)
            results[name]["reads"] = reads(store, args.frames, args.objects, args.repeats)
            print(name, results[name], flush=True)
        (root / "masks.sqlite").unlink()
        for name, opener in {
            "sqlite": lambda: SqliteMaskStore(root / f"{uuid.uuid4().hex}.sqlite"),
            "postgres": lambda: database.store(f"bench-{uuid.uuid4().hex}"),
        }.items():
            rate, lag = sustain(opener, masks, 3, 100, args.sustain_s)
            results[name]["sustain_fps"], results[name]["sustain_lag_s"] = rate, lag
            print(name, "sustain", rate, lag, flush=True)
        for store in stores.values():
            store.drop()
    finally:
        database.close()
        server.close()
    return results


def report(results: dict, args: argparse.Namespace, wall_s: float) -> str:
    command = "python " + shlex.join(["scripts/bench_mask_store.py", *sys.argv[1:]])
    lite, pg = results["sqlite"], results["postgres"]
    version = PostgresServer.version()
    lines = [
        SECTION,
        "",
        f"`{command}` on {platform.node()} ({os.cpu_count()} CPUs; {cpu_flags()}), "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {version} on the same machine over loopback "
        f"TCP with its default durability (fsync, synchronous commits), pool of "
        f"{args.pool_size}; SQLite {__import__('sqlite3').sqlite_version} in WAL mode as the "
        f"engine opens it. {args.frames:,} frames x {args.objects} objects (720p ellipses, "
        f"{results['rle_bytes']:.0f} bytes of RLE each); the whole run took {wall_s:.0f} s on a "
        "machine shared with other jobs.",
        "",
        "| writes | SQLite | PostgreSQL | PostgreSQL / SQLite |",
        "| --- | --- | --- | --- |",
    ]

    def row(name: str, a: float, b: float, unit: str, digits: int = 0) -> str:
        return f"| {name} | {a:,.{digits}f} {unit} | {b:,.{digits}f} {unit} | {b / a:.2f}x |"

    lines += [
        row(
            f"one put per frame ({min(args.put_frames, args.frames):,} frames): frames/s",
            lite["put_fps"],
            pg["put_fps"],
            "frames/s",
        ),
        row("the same in masks/s", lite["put_mps"], pg["put_mps"], "masks/s"),
        row("put latency, median", lite["put_p50_ms"], pg["put_p50_ms"], "ms", 2),
        row("put latency, 99th percentile", lite["put_p99_ms"], pg["put_p99_ms"], "ms", 2),
    ]
    if args.frames > args.put_frames:
        lines.append(
            row(
                "bulk load, 1,000 frames a transaction (PostgreSQL: new rows by COPY)",
                lite["bulk_fps"],
                pg["bulk_fps"],
                "frames/s",
            )
        )
    lines += [
        row(
            f"3 sessions x 100 frames/s x {args.objects} objects for {args.sustain_s:g} s: "
            "frames/s written",
            lite["sustain_fps"],
            pg["sustain_fps"],
            "frames/s",
        ),
        "",
        f"| reads over {args.frames:,} frames (median of {args.repeats}) | SQLite | PostgreSQL "
        "| PostgreSQL / SQLite |",
        "| --- | --- | --- | --- |",
    ]
    lines += [row(name, lite["reads"][name], pg["reads"][name], "ms", 1) for name in lite["reads"]]
    worst = max(pg["reads"][n] / lite["reads"][n] for n in lite["reads"] if "masked" not in n)
    # Sustained: every session wrote all its frames within half a second of its schedule.
    sustained = {name: results[name]["sustain_lag_s"] < 0.5 for name in ("sqlite", "postgres")}
    lines += [
        "",
        f"Range reads, pages, review and timeline on PostgreSQL: at most {worst:.2f}x SQLite's "
        f"(bar: within 2x). 3 sessions x 100 frames/s x {args.objects} objects "
        f"({300 * args.objects:,} masks/s), each put its own transaction as propagation does: "
        f"{'sustained' if sustained['postgres'] else 'NOT sustained'} on PostgreSQL (slowest "
        f"session {pg['sustain_lag_s']:.2f} s behind its schedule at the end), "
        f"{'sustained' if sustained['sqlite'] else 'not sustained'} on SQLite "
        f"({lite['sustain_lag_s']:.2f} s). A put reads the neighbouring frames' masks (for "
        "iou_prev) and commits before it returns, so a frame is reported only once it is in the "
        "database: its latency is two round trips and a commit (an fsync of the WAL; "
        "concurrent sessions' commits share one).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=positive_int, default=108_000)
    parser.add_argument("--objects", type=positive_int, default=10)
    parser.add_argument(
        "--put-frames", type=positive_int, default=10_000, help="frames written one put each"
    )
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--sustain-s", type=float, default=10.0)
    parser.add_argument("--pool-size", type=positive_int, default=4)
    parser.add_argument("--write", type=Path, help="replace this script's section in the file")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        results = measure(args, Path(root))
    text = report(results, args, time.perf_counter() - began)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()

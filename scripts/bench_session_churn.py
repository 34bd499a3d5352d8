"""Session churn: does a replica's memory come back once its sessions are deleted?

One ``SessionEngine`` in this process (no Ray), built as the tests build it: SAM 2.1 tiny with
random weights, CPU. ``--slots`` threads each run sessions one after the other until
``--sessions`` have come and gone: create (a synthetic clip, tests/videos.py), three clicks on
two objects, propagate both ways, export a PNG ZIP, delete. The baseline is the process's RSS
after the engine's warm-up and one round of ``--slots`` such sessions (as the load test's
baseline follows one warm-up session per replica); RSS is sampled after every deletion.

To tell a leak from the allocator, each side also reports what is still alive once every
session is gone: ``EngineSession`` objects and torch tensors found by ``gc.get_objects()`` (and the
bytes of their storages), the Python heap (``tracemalloc``, with ``--tracemalloc``), and
glibc's own account (``mallinfo2``: bytes in use against bytes held free in its arenas). A leak
keeps objects or in-use bytes growing; allocator retention keeps them flat while the free bytes
held, and RSS, grow.

Each side is a fresh process: ``engine trim`` as the engine runs (``malloc_trim(0)`` when a
session is freed, ``host_memory``), ``no trim`` with that call made a no-op, and the same two
under ``MALLOC_ARENA_MAX=2``.

    python scripts/bench_session_churn.py --sessions 100 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from local_service import REPO, cpu_flags, positive_int, write_section

SECTION = "## Memory comes back (scripts/bench_session_churn.py)"
SIDES = {
    "no trim": ({}, False),
    "engine trim": ({}, True),
    "no trim, MALLOC_ARENA_MAX=2": ({"MALLOC_ARENA_MAX": "2"}, False),
    "engine trim, MALLOC_ARENA_MAX=2": ({"MALLOC_ARENA_MAX": "2"}, True),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=positive_int, default=100)
    parser.add_argument("--slots", type=positive_int, default=3, help="sessions at a time")
    parser.add_argument("--frames", type=positive_int, default=12, help="frames of the clip")
    parser.add_argument("--image-size", type=positive_int, default=256)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    parser.add_argument("--tracemalloc", action="store_true", help="trace the Python heap too")
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    parser.add_argument("--json", type=Path, help="also save every side's samples here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run one side, print JSON
    return parser.parse_args()


# ---- the child: one side in this process ----------------------------------------------------


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


_MALLINFO2_FIELDS = [
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]


def mallinfo() -> dict[str, int] | None:
    """glibc's heap: ``in_use`` bytes malloc'd and not freed, ``free_held`` bytes free in its
    arenas (RSS unless trimmed), ``mmapped`` big blocks (returned on free). None off glibc."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    info = fn()
    return {"in_use": info.uordblks, "free_held": info.fordblks, "mmapped": info.hblkhd}


def alive() -> dict[str, int]:
    """Sessions and torch tensors reachable by the garbage collector, and their storages'
    bytes (each storage once)."""
    import torch

    from deployments.engine import EngineSession

    gc.collect()
    sessions = tensors = 0
    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, EngineSession):
            sessions += 1
        elif issubclass(type(obj), torch.Tensor):
            tensors += 1
            try:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):
                pass
    return {"sessions": sessions, "tensors": tensors, "tensor_bytes": sum(storages.values())}


def run_side(args: argparse.Namespace, trim: bool) -> dict:
    import tracemalloc

    from deployments.engine import SessionEngine
    from deployments.engine import engine as engine_module
    from deployments.engine.host_memory import release_free_memory
    from deployments.protocol import EngineSettings, Prompt, PropagationRequest
    from tests.videos import write_video

    if not trim:
        engine_module.release_free_memory = lambda: False
    work = Path(tempfile.mkdtemp(prefix="churn-"))
    clip = write_video(work / "clip.mp4", num_frames=args.frames)
    settings = EngineSettings(
        weights="random",
        image_size=args.image_size,
        device="cpu",
        torch_threads=args.threads,
        max_sessions=args.slots,
        storage_root=work / "sessions",
    )
    engine = SessionEngine(settings)
    after_load = rss()
    last = args.frames - 1

    def one_session() -> None:
        session = engine.session(engine.create_session(clip).session_id)
        width, height = session.video.width, session.video.height
        for obj_id, frame, x in ((1, 0, 0.3), (2, 0, 0.7), (1, min(5, last), 0.35)):
            session.add_prompt(
                Prompt(frame_index=frame, obj_id=obj_id, points=[(width * x, height / 2)])
            )
        for _ in session.propagate(PropagationRequest(direction="both")):
            pass
        session.export("png_zip", work / f"{session.id}.zip")
        (work / f"{session.id}.zip").unlink()
        engine.delete_session(session.id)

    samples: list[tuple[int, int, int]] = []  # RSS, malloc in use, free held
    lock = threading.Lock()
    remaining = [0]

    def slot() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            one_session()
            heap = mallinfo() or {}
            with lock:
                samples.append((rss(), heap.get("in_use", 0), heap.get("free_held", 0)))

    def churn(count: int) -> float:
        remaining[0] = count
        began = time.perf_counter()
        threads = [threading.Thread(target=slot) for _ in range(args.slots)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - began

    churn(args.slots)  # warm-up round
    samples.clear()
    time.sleep(1)
    baseline, baseline_heap, baseline_alive = rss(), mallinfo(), alive()
    if args.tracemalloc:
        tracemalloc.start(25)
        traced_before = tracemalloc.take_snapshot()
    cpu_before = _other_cpu_s()
    elapsed = churn(args.sessions)
    other_cpu = _other_cpu_s() - cpu_before
    time.sleep(1)
    final, final_heap, final_alive = rss(), mallinfo(), alive()
    traced = None
    if args.tracemalloc:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.compare_to(traced_before, "lineno")
        traced = {
            "growth_bytes": sum(s.size_diff for s in stats),
            "top": [str(s) for s in stats[:8]],
        }
        tracemalloc.stop()
    trimmed = None
    if not trim:  # what trimming would give back now
        release_free_memory()
        trimmed = rss()
    engine.close()
    return {
        "after_load": after_load,
        "baseline": baseline,
        "final": final,
        "peak": max(r for r, _, _ in samples),
        "samples": samples,
        "after_trim_now": trimmed,
        "heap_before": baseline_heap,
        "heap_after": final_heap,
        "alive_before": baseline_alive,
        "alive_after": final_alive,
        "tracemalloc": traced,
        "seconds": elapsed,
        "other_cpu_s": other_cpu,
        "threads_left": threading.active_count(),
    }


def _other_cpu_s() -> float:
    """CPU seconds every other process has used so far (from /proc/stat minus this one)."""
    import psutil

    total = psutil.cpu_times()
    me = psutil.Process().cpu_times()
    busy = total.user + total.system + getattr(total, "nice", 0.0)
    return busy - (me.user + me.system + me.children_user + me.children_system)


# ---- the parent: each side in a fresh process --------------------------------------------------


def run_in_child(args: argparse.Namespace, side: str) -> dict:
    env_extra, _ = SIDES[side]
    argv = [sys.executable, __file__, "--child", side, *_forwarded(args)]
    env = os.environ | env_extra
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"side {side!r} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _forwarded(args: argparse.Namespace) -> list[str]:
    out = [
        f"--sessions={args.sessions}",
        f"--slots={args.slots}",
        f"--frames={args.frames}",
        f"--image-size={args.image_size}",
        f"--threads={args.threads}",
    ]
    return out + (["--tracemalloc"] if args.tracemalloc else [])


def mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


def report(args: argparse.Namespace, results: dict[str, dict]) -> str:
    import torch

    command = "python scripts/bench_session_churn.py " + shlex.join(sys.argv[1:])
    rows = []
    for side, r in results.items():
        base = r["baseline"]
        heap0, heap1 = r["heap_before"] or {}, r["heap_after"] or {}
        a0, a1 = r["alive_before"], r["alive_after"]
        rows.append(
            f"| {side} | {mb(r['after_load'])} | {mb(base)} | {mb(r['peak'])} | {mb(r['final'])} "
            f"| {r['final'] / base:.3f} | {r['peak'] / base:.3f} "
            f"| {mb(heap0.get('in_use', 0))} -> {mb(heap1.get('in_use', 0))} "
            f"| {mb(heap0.get('free_held', 0))} -> {mb(heap1.get('free_held', 0))} "
            f"| {a0['sessions']} -> {a1['sessions']} | {a0['tensors']} -> {a1['tensors']} "
            f"| {mb(a0['tensor_bytes'])} -> {mb(a1['tensor_bytes'])} "
            f"| {r['seconds']:.0f} | {r['other_cpu_s']:.0f} |"
        )
    header = (
        "| side | RSS after load MB | baseline MB | peak MB | final MB | final / baseline "
        "| peak / baseline | malloc in use MB | malloc free held MB | Session objects "
        "| tensors | tensor bytes MB | churn s | other processes' CPU s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return (
        f"{SECTION}\n\nCommand: `{command.strip()}`\n\n"
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs (flags: {cpu_flags()}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{args.threads} torch thread(s). Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"One SessionEngine in one process (no Ray), sam2.1_hiera_tiny with random weights at "
        f"image size {args.image_size}, CPU; {args.slots} threads run sessions side by side "
        f"until {args.sessions} have come and gone, each: create on a synthetic "
        f"{args.frames}-frame 160x120 clip, 3 clicks on 2 objects, propagate both ways, export "
        "a PNG ZIP, delete. Baseline: RSS after the warm-up and one round of "
        f"{args.slots} sessions; final: 1 s after the last deletion. `a -> b`: at the "
        "baseline, then at the end. Each side is a fresh process.\n\n"
        f"{header}\n" + "\n".join(rows) + "\n"
    )


def main() -> int:
    args = parse_args()
    if args.child:
        sys.path.insert(0, str(REPO))
        result = run_side(args, SIDES[args.child][1])
        print(json.dumps(result))
        return 0
    results = {}
    for side in args.sides:
        results[side] = run_in_child(args, side)
        r = results[side]
        print(
            f"{side}: baseline {mb(r['baseline'])} MB, final {mb(r['final'])} MB "
            f"({r['final'] / r['baseline']:.3f}), peak {mb(r['peak'])} MB, "
            f"alive {r['alive_before']} -> {r['alive_after']}, "
            f"heap {r['heap_before']} -> {r['heap_after']}, trimmed now {r['after_trim_now']}, "
            f"{r['seconds']:.0f} s, other CPU {r['other_cpu_s']:.0f} s",
            flush=True,
        )
        if r["tracemalloc"]:
            print("\n".join(r["tracemalloc"]["top"]), flush=True)
    section = report(args, results)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.write:
        write_section(args.write, SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

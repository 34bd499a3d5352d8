"""The markdown section ``bench_gpu.py`` prints and writes: engine throughput, click latency,
session memory and Serve replicas, each a table, under what was measured where."""

from __future__ import annotations

import platform
import statistics
from datetime import UTC, datetime

from bench_gpu_engine import Figures, Plan
from bench_serve import percentile

SECTION = "## GPU throughput, click latency and memory (scripts/bench_gpu.py)"
SMOKE_SECTION = "## bench_gpu.py CPU smoke run: proves the script runs, not GPU figures"


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

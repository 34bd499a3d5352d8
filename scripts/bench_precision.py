"""SAM 2.1 tiny's image encoder in fp32 and under bf16 autocast, on this CPU as it is and capped
at AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, a CPU without native bf16), and
the dtype ``compute_dtype: auto`` picks in each case.

    python scripts/bench_precision.py [--image-size 256] [--threads 1] [--write docs/benchmarks.md]

Each case runs in its own process (the caps are read when torch starts), one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from local_service import AVX2_CAP, REPO, write_section

TITLE = "## Compute dtype on CPU (scripts/bench_precision.py)"

_CHILD = """
import contextlib, json, sys, time, torch
from deployments.engine.models import load_predictor
from deployments.engine.precision import resolve_compute_dtype
from deployments.protocol import EngineSettings
size, threads, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
p = load_predictor(EngineSettings(weights="random", image_size=size, device="cpu"))
x = torch.randn(1, 3, size, size)
def timed(ctx):
    with torch.inference_mode(), ctx:
        p.forward_image(x)
        began = time.perf_counter()
        for _ in range(repeats):
            p.forward_image(x)
        return (time.perf_counter() - began) / repeats
fp32 = timed(contextlib.nullcontext())
bf16 = timed(torch.autocast("cpu", dtype=torch.bfloat16))
auto = str(resolve_compute_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "fp32": fp32,
                  "bf16": bf16, "auto": auto}))
"""


def run_case(env: dict[str, str], args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(args.image_size), str(args.threads), str(args.repeats)],
        env=os.environ | env | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    args = parser.parse_args()
    rows = []
    for label, env in (("as it is", {}), ("capped at AVX2", AVX2_CAP)):
        case = run_case(env, args)
        rows.append(
            f"| {label} | {case['capability']} | {case['fp32']:.3f} | {case['bf16']:.3f} | "
            f"{case['bf16'] / case['fp32']:.2f} | {case['auto']} |"
        )
        print(rows[-1])
    if args.write:
        flags = sorted(
            {f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("avx", "amx"))}
        )
        section = (
            f"{TITLE}\n\nCommand: `python scripts/bench_precision.py --image-size "
            f"{args.image_size} --threads {args.threads} --write {args.write}`\n\n"
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, CPU flags "
            f"{' '.join(flags)}. Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
            f"SAM 2.1 tiny's `forward_image` at image size {args.image_size}, random weights, "
            f"{args.threads} torch thread(s), mean of {args.repeats} after one warm-up; each "
            "row is a fresh process.\n\n"
            "| CPU | torch capability | fp32 s | bf16 autocast s | bf16/fp32 | auto picks |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        )
        write_section(args.write, TITLE, section)


if __name__ == "__main__":
    main()

"""Memory of the retention window and size of the persisted prompt state, at the model's real
size (1024 unless told): what one tracked frame of one object keeps in SAM 2's state, what
the protected window around a prompt and a propagation's end holds, how many frames the
default ``retention_mb`` keeps, and the checkpoint bytes per prompt a rebuild reads.

Sizes are shapes x dtypes, so random weights give the real figures. One session, one object
clicked on frame 0, then one more object clicked on frame 0 (two prompts), propagated forward
over a short real clip, in each compute dtype asked for.

    python scripts/bench_retention.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before sam2 imports tqdm

from local_service import cpu_flags, positive_int, write_section

from deployments.engine import SessionEngine
from deployments.engine import state as sam_state
from deployments.protocol import EngineSettings, Prompt, PropagationRequest, VideoOptions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = (REPO / "../shared/videos/bedroom.mp4").resolve()
SECTION = "## Retention window and persisted prompt state (scripts/bench_retention.py)"
MIB = 2**20


def measure(
    video: Path, dtype: str, image_size: int, seconds: float, root: Path
) -> dict[str, float]:
    settings = EngineSettings(
        weights="random",
        image_size=image_size,
        device="cpu",
        compute_dtype=dtype,
        storage_root=root / dtype,
        max_encoder_batch=1,
    )
    engine = SessionEngine(settings)
    try:
        options = VideoOptions(end_time=seconds)
        session = engine.session(engine.create_session(video, options).session_id)
        session.persist(lambda entry: None)
        w, h = session.video.width, session.video.height
        session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(w / 2, h / 2)]))
        session.add_prompt(Prompt(frame_index=0, obj_id=2, points=[(w / 4, h / 4)]))
        list(session.propagate(PropagationRequest(direction="forward")))
        state = session._state
        held = [sam_state.non_cond_outputs(state, i) for i in state["obj_idx_to_id"]]
        per_frame = sum(nc.nbytes for nc in held) / sum(len(nc) for nc in held)
        window = sam_state.memory_window(engine.predictor)
        units = list((session.directory / "sam2_state").glob("obj*_f*.pt"))
        return {
            "per_frame_object_mib": per_frame / MIB,
            "prompt_window_mib": (2 * window + 1) * per_frame / MIB,
            "propagation_end_mib": window * per_frame / MIB,
            "default_budget_frames": settings.retention_mb * MIB / per_frame,
            "checkpoint_per_prompt_mib": sum(u.stat().st_size for u in units) / len(units) / MIB,
        }
    finally:
        engine.close()


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    command = "python " + shlex.join(["scripts/bench_retention.py", *sys.argv[1:]])
    lines = [
        SECTION,
        "",
        f"`{command}` on {platform.node()} ({os.cpu_count()} CPUs; {cpu_flags()}), "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, torch {__import__('torch').__version__}, "
        f"SAM 2.1 tiny with random weights at {args.image_size} (sizes depend on shapes and "
        f"dtypes only; every SAM 2.1 size has the same memory shapes).",
        "",
        "| compute dtype | one frame x object | protected around a prompt (33 frames) | "
        "protected behind a propagation's end (16) | frames x objects in the default "
        "retention_mb (256 MiB) | checkpoint per prompt (object x frame) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dtype, r in results.items():
        lines.append(
            f"| {dtype} | {r['per_frame_object_mib']:.2f} MiB | {r['prompt_window_mib']:.1f} MiB"
            f" | {r['propagation_end_mib']:.1f} MiB | {r['default_budget_frames']:.0f} | "
            f"{r['checkpoint_per_prompt_mib']:.2f} MiB |"
        )
    lines += [
        "",
        "A session's non-conditioning outputs are bounded by the protected windows (per object: "
        "33 frames per prompted frame, plus 16 around the latest propagation's start and each "
        "pass end) plus `retention_mb`. Prompt outputs are kept whole, as stock SAM 2 keeps "
        "them; on the model device unless `offload_state_to_cpu`. Host memory for the per-frame "
        "bookkeeping (tracked and dropped frames) is 2 bytes per frame and object: 216 KB per "
        "object for an hour at 30 fps.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--image-size", type=positive_int, default=1024)
    parser.add_argument("--seconds", type=float, default=0.25, help="of the clip to propagate")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--write", type=Path, help="replace this script's section in the file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        results = {
            dtype: measure(args.video, dtype, args.image_size, args.seconds, Path(root))
            for dtype in args.dtypes
        }
    text = report(results, args)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()

"""Shared by the scripts: the service on a local Ray cluster, the benchmarks document, and the
CPU facts a benchmark reports."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
# Environment that makes torch and oneDNN use a plain AVX2 CPU's kernels: no native bf16, so the
# engine computes in fp32 (what CPUs without AVX-512 get).
AVX2_CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@contextmanager
def serve_locally(settings: dict[str, Any], port: int, name: str) -> Iterator[str]:
    """Start a local Ray cluster (2 CPUs), ``serve.run`` the app at ``/``; yields its base URL
    and shuts everything down afterwards."""
    import ray
    from ray import serve

    from deployments.app import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(settings), name=name, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section headed ``title`` in the benchmarks markdown file (or append it),
    keeping every other section."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = section.rstrip() + "\n\n"
    start = text.find(title)
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    path.write_text(text)


def cpu_flags() -> str:
    """The CPU's AVX-512 and AMX flags (what decides bf16 speed on a CPU), from /proc/cpuinfo."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return ", ".join(wanted) or "no AVX-512 or AMX"


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value

"""Resident memory of the ingress and SAM 2 replica processes of a running app.

    python scripts/bench_ingress_rss.py [--write docs/benchmarks.md]

Starts the app on a local Ray cluster (one SAM 2 replica, random weights at image size 256),
waits until it is healthy, and reads each Serve replica's RSS from its process (Ray names actor
processes ``ray::ServeReplica:<app>:<deployment>``). The ingress is HTTP only: its RSS says
whether it loaded the model's libraries.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from local_service import serve_locally, write_section

TITLE = "## Ingress replica RSS (scripts/bench_ingress_rss.py)"


def replica_rss_mb(deployment: str) -> float:
    """RSS of the (one) process of a Serve deployment's replica, in MB."""
    for proc in psutil.process_iter(["cmdline"]):
        if any(f":{deployment}" in part for part in proc.info["cmdline"] or []):
            return proc.memory_info().rss / 2**20
    raise RuntimeError(f"no process of deployment {deployment}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--write", type=Path, help="update this benchmarks markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as storage:
        settings = {
            "weights": "random",
            "image_size": 256,
            "device": "cpu",
            "storage_root": storage,
            "min_replicas": 1,
            "max_replicas": 1,
            "replica_num_cpus": 0,
            "ingress_num_cpus": 0,
        }
        with serve_locally(settings, args.port, "rss") as url:
            for _ in range(240):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
                time.sleep(0.5)
            time.sleep(2)
            ingress = replica_rss_mb("Ingress")
            replica = replica_rss_mb("SAM2Replica")
    print(f"ingress replica RSS {ingress:.0f} MB, SAM 2 replica RSS {replica:.0f} MB")
    if args.write:
        section = (
            f"{TITLE}\n\nCommand: `python scripts/bench_ingress_rss.py --write {args.write}`\n\n"
            f"Machine: {platform.platform()}, {psutil.cpu_count()} CPUs. "
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
            f"| process | RSS MB |\n|---|---|\n| ingress replica | {ingress:.0f} |\n"
            f"| SAM 2 replica (tiny, 256) | {replica:.0f} |\n"
        )
        write_section(args.write, TITLE, section)


if __name__ == "__main__":
    main()

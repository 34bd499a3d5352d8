"""Fuzz the service's OpenAPI schema with schemathesis: start the app on a local Ray cluster
as a deployment runs it (random weights, CPU, a Redis store, ``VIDEO_ROOT`` with a video in it,
API keys on), run schemathesis against its /openapi.json with the checks
``not_a_server_error`` and ``response_schema_conformance`` (with a valid key), and exit with its
status (0: no 5xx response and no schema violation).

    python scripts/fuzz.py --max-examples 150 --seed 1      # scripts/fuzz.sh: >= 3,000 cases
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_service import serve_locally

from tests.servers import RedisServer
from tests.videos import write_video

CHECKS = "not_a_server_error,response_schema_conformance"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=30, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=8140)
    parser.add_argument("--report", type=Path, help="write schemathesis' JUnit report here")
    return parser.parse_args()


API_KEY = "fuzz-key-0123456789"


def fuzz_settings(storage: Path, redis_url: str, video_root: Path) -> dict:
    """Room for the sessions the fuzzer creates and never deletes; they expire quickly."""
    return {
        "redis_url": redis_url,
        "video_root": str(video_root),
        "api_keys": [API_KEY],
        "weights": "random",
        "image_size": 128,
        "device": "cpu",
        "torch_threads": 1,
        "storage_root": str(storage),
        "min_replicas": 1,
        "max_replicas": 1,
        "max_sessions": 64,
        "replica_num_cpus": 0,
        "ingress_num_cpus": 0,
        "session_ttl_s": 120,
        "expiry_check_s": 5,
        "max_upload_bytes": 50 * 2**20,
    }


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        video_root = scratch / "videos"
        video_root.mkdir()
        write_video(video_root / "clip.mp4", num_frames=8)
        redis = RedisServer(scratch / "redis").start()
        try:
            settings = fuzz_settings(scratch / "sessions", redis.url, video_root)
            return _fuzz(args, settings)
        finally:
            redis.stop()


def _fuzz(args: argparse.Namespace, settings: dict) -> int:
    import httpx

    with serve_locally(settings, args.port, "fuzz") as base:
        while httpx.get(f"{base}/health", timeout=10).status_code != 200:
            time.sleep(0.5)
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(args.max_examples),
            "--seed",
            str(args.seed),
            "--request-timeout",
            "120",
            "--header",
            f"Authorization: Bearer {API_KEY}",
        ]
        if args.report:
            command += ["--report", "junit", "--report-junit-path", str(args.report)]
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

"""Shared by the scripts: the service on a local Ray cluster, and the benchmarks document."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@contextmanager
def serve_locally(settings: dict[str, Any], port: int, name: str) -> Iterator[str]:
    """Start a local Ray cluster (2 CPUs), ``serve.run`` the app at ``/``; yields its base URL
    and shuts everything down afterwards."""
    import ray
    from ray import serve

    from ingress.builder import build_app

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

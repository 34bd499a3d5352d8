"""Exports of a long session stay out of memory: for a 2,000-frame session the ingress's and the
replica's peak RSS grow by less than 200 MB while every format is exported and downloaded.

The masks are written into the session's MaskStore by the test while no replica holds it
(propagating 2,000 frames on this CPU would take many minutes); the export path, including the
session's rebuild on the replacement replica, is the real one."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from ray import serve

from deployments.engine.mask_store import SqliteMaskStore, encode_masks
from tests.serve.conftest import deploy, stack_settings
from tests.videos import write_video

NUM_FRAMES = 2000
LIMIT_MB = 200


class PeakRss:
    """Samples the RSS of some processes every 20 ms while running."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.base = {name: p.memory_info().rss for name, p in self.processes.items()}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for name, process in self.processes.items():
                self.peak[name] = max(self.peak[name], process.memory_info().rss)

    def growth_mb(self) -> dict[str, float]:
        return {name: (self.peak[name] - self.base[name]) / 2**20 for name in self.processes}


def ingress_pid(app: str) -> int:
    for process in psutil.process_iter(["cmdline"]):
        if any(f"ServeReplica:{app}:Ingress" in part for part in process.info["cmdline"] or ()):
            return process.pid
    raise LookupError("no ingress process")


@pytest.fixture(scope="module")
def long_session(http_port, tmp_path_factory):
    storage = tmp_path_factory.mktemp("sessions")
    settings = stack_settings(storage, min_replicas=1, max_replicas=1, max_sessions=1)
    stack = deploy(http_port, "big", settings)
    video = write_video(tmp_path_factory.mktemp("v") / "long.mp4", num_frames=NUM_FRAMES)
    created = stack.upload(video)
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    # The owner holds its MaskStore's exclusive lock: kill it (its lock goes with it), write the
    # masks, and let the first export rebuild the session on the replacement replica.
    handle = serve.get_deployment_handle("SAM2Replica", "big")
    os.kill(handle.status.remote().result()["pid"], signal.SIGKILL)
    store = SqliteMaskStore(storage / sid / "masks.sqlite")
    masks = np.zeros((2, 120, 160), bool)
    for frame in range(NUM_FRAMES):
        masks[:] = False
        masks[0, 40:80, (frame % 100) : (frame % 100) + 40] = True
        masks[1, 10:40, 100:140] = True
        store.put(frame, encode_masks([1, 2], masks, [0.9, 0.8]))
    store.close()
    while stack.client.get("/health").json()["capacity"] != 1:  # the replacement is up
        time.sleep(0.5)
    return stack, f"/api/v1/sessions/{sid}"


def test_exporting_2000_frames_grows_rss_by_less_than_200_mb(long_session, tmp_path):
    stack, base = long_session
    replica = serve.get_deployment_handle("SAM2Replica", "big").status.remote().result()
    with PeakRss({"ingress": ingress_pid("big"), "replica": replica["pid"]}) as rss:
        for fmt in ("coco", "png_zip", "davis", "mp4"):
            started = time.perf_counter()
            with stack.client.stream("GET", f"{base}/export", params={"format": fmt}) as response:
                assert response.status_code == 200
                size = sum(len(chunk) for chunk in response.iter_bytes())
            print(f"{fmt}: {size / 2**20:.1f} MB in {time.perf_counter() - started:.1f}s")
    growth = rss.growth_mb()
    print(f"peak RSS growth over {NUM_FRAMES} frames: {growth}")
    assert all(mb < LIMIT_MB for mb in growth.values()), growth

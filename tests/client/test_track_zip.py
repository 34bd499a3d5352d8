"""``/track``'s ZIP is written in two places that cannot share a module: the engine
(``deployments/engine/exports.py``, for ``POST /track``) and the client
(``sam2serve/track_zip.py``, for ``sam2serve track``), since neither side imports the other.
For the same masks both write the same bytes."""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest

from deployments.engine.exports import ExportSource
from deployments.engine.exports import write_track_zip as write_on_the_server
from deployments.engine.mask_store import SqliteMaskStore, encode_masks
from deployments.protocol.types import SourceVideo, VideoInfo
from sam2serve.models import FrameMasks
from sam2serve.track_zip import write_track_zip


@pytest.mark.parametrize(
    ("width", "height"),
    [(97, 61), (1, 9), (330, 250)],  # odd sizes; one pixel wide; noise past one 8 KiB IDAT
)
def test_both_writers_write_byte_identical_zips(tmp_path, monkeypatch, width, height):
    num_frames = 7
    rng = np.random.default_rng(width)
    store = SqliteMaskStore(tmp_path / "masks.sqlite")
    for frame in (1, 2, 5):  # frames 0, 3, 4 and 6 have none: black PNGs
        masks = np.zeros((2, height, width), bool)
        masks[0, frame : frame + height // 2, : max(width // 3, 1)] = True
        if frame != 2:  # object 2's mask is empty on frame 2
            masks[1] = rng.random((height, width)) > 0.7
        store.put(frame, encode_masks([1, 2], masks, [0.9, 0.8]))
    source = SourceVideo(width=width, height=height, fps=10, num_frames=num_frames, duration_s=0.7)
    video = VideoInfo(
        num_frames=num_frames,
        fps=10,
        width=width,
        height=height,
        start_time=0,
        end_time=0.7,
        frame_stride=1,
        source=source,
    )
    frames = [FrameMasks.model_validate(frame.model_dump()) for frame in store.frames()]
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # ZIP entries carry a time

    write_on_the_server(
        ExportSource(video, None, store, [], overlay_alpha=0.45), tmp_path / "server.zip"
    )
    write_track_zip(frames, num_frames, (width, height), tmp_path / "client.zip")

    written = (tmp_path / "client.zip").read_bytes()
    assert written == (tmp_path / "server.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "client.zip") as archive:
        assert archive.namelist() == [f"{i:05d}.png" for i in range(num_frames)]

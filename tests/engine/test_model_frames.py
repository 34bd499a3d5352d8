"""The frames SAM 2 sees never change within a session (issue 18): the model reads the
session's source, decoded at S x S, whether the session is new or reopened by another engine,
and however long it has been open; the same click gives the same mask either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployments.engine import EngineSession, SessionEngine
from deployments.engine.frames import to_model_input
from deployments.engine.video_index import VideoIndex
from deployments.engine.video_reader import VideoReader
from deployments.engine.video_selection import select_frames
from deployments.protocol import RLE, Prompt, VideoOptions
from tests.conftest import TEST_IMAGE_SIZE, engine_settings
from tests.engine.test_video_source import SIZE, encode

S = TEST_IMAGE_SIZE
# Each frame of ``encode``'s clips scrolls a random texture: every frame differs from the next.
TRIM = VideoOptions(start_time=0.5, frame_stride=3)
# Frames far from the long GOP's keyframe, never visited before they are asked for.
FAR = (40, 74)


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 frames at 30 fps in one GOP (B-frames), 128x96: the kind of video the removed
    seek-friendly copy was made for."""
    return encode(tmp_path_factory.mktemp("model_frames") / "long_gop.mp4", 240, gop=250)


def source_model_input(video: Path, frames: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The session's frames ``frames`` (``TRIM`` applied) as the model's input, from the
    source."""
    index = VideoIndex.build(video)
    selection = select_frames(index, TRIM, max_frames=10_000)
    with VideoReader(video, index, selection, size=(S, S)) as reader:
        return {k: to_model_input(reader.frame(k), S).numpy() for k in frames}


def click(session: EngineSession, frame_index: int, obj_id: int) -> RLE:
    """The mask of a first click on a new object: SAM 2's answer from the frame alone (no
    stored mask seeds it)."""
    point = (SIZE[0] / 2, SIZE[1] / 2)
    result = session.add_prompt(Prompt(frame_index=frame_index, obj_id=obj_id, points=[point]))
    return next(mask.rle for mask in result.masks if mask.obj_id == obj_id)


def test_new_and_reopened_sessions_read_the_source_and_answer_the_same(
    tmp_path, predictor, long_gop
):
    root = tmp_path / "sessions"
    expected = source_model_input(long_gop, FAR)
    first = SessionEngine(engine_settings(root), predictor=predictor)
    session = first.session(first.create_session(long_gop, TRIM).session_id)
    assert session.video.num_frames == 75  # (240 - 15) / 3
    for k in FAR:
        np.testing.assert_array_equal(session.frames[k].numpy(), expected[k])
    mask = click(session, FAR[0], obj_id=1)
    assert session.info().preparation is None  # no background work on the frames
    first.shutdown()  # the replica goes away; files stay

    second = SessionEngine(engine_settings(root), predictor=predictor)
    try:
        reopened = second.open_session(session.id)
        assert reopened.info().preparation is None
        for k in FAR:
            np.testing.assert_array_equal(reopened.frames[k].numpy(), expected[k])
        assert click(reopened, FAR[0], obj_id=2) == mask
    finally:
        second.close()

"""A session's video: indexed, not copied; uploads moved in, server-side files referenced in
place and refused once changed; the frames the model and people see, against a full decode."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from deployments.engine import SessionEngine
from deployments.engine.frames import to_model_input
from deployments.engine.video_index import VideoIndex
from deployments.protocol import (
    BadVideoError,
    InvalidRequestError,
    VideoOptions,
    VideoTooLargeError,
)
from deployments.protocol.errors import SourceChangedError
from tests.conftest import engine_settings
from tests.videos import write_video


def full_decode(path: Path, size: tuple[int, int]) -> list[np.ndarray]:
    """Every frame of ``path`` by one sequential decode, as RGB at ``size`` (w, h)."""
    with av.open(str(path)) as container:
        return [
            frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
            for frame in container.decode(video=0)
        ]


def upload(video: Path, engine: SessionEngine) -> Path:
    """A copy of ``video`` where the ingress leaves uploads: storage_root/.uploads."""
    target = engine.settings.storage_root / ".uploads" / f"upload{video.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, target)
    return target


def files_in(directory: Path) -> set[str]:
    """The session's files besides its masks (masks.sqlite and SQLite's journal files)."""
    return {p.name for p in directory.iterdir() if not p.name.startswith("masks.sqlite")}


# ---- where the video lives ------------------------------------------------------------------


def test_an_upload_is_moved_into_the_session_directory(engine, video):
    uploaded = upload(video, engine)
    sid = engine.create_session(uploaded, move=True).session_id
    directory = engine.session(sid).directory
    assert not uploaded.exists()
    assert files_in(directory) == {"source.mp4", "index.npz", "video.json"}
    assert (directory / "source.mp4").read_bytes() == video.read_bytes()
    engine.delete_session(sid)
    assert not directory.exists()


def test_a_server_side_video_is_referenced_in_place_and_never_removed(engine, tmp_path, video):
    source = tmp_path / "library" / "clip.mp4"
    source.parent.mkdir()
    shutil.copyfile(video, source)
    sid = engine.create_session(source).session_id
    directory = engine.session(sid).directory
    assert files_in(directory) == {"index.npz", "video.json"}
    record = json.loads((directory / "video.json").read_text())
    assert record["source"] == str(source.resolve())
    assert record["source_size"] == source.stat().st_size
    engine.delete_session(sid)
    assert source.read_bytes() == video.read_bytes()


def test_a_failed_upload_leaves_neither_the_upload_nor_a_directory(engine):
    junk = engine.settings.storage_root / ".uploads" / "junk.mp4"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(BadVideoError):
        engine.create_session(junk, session_id="failed-upload", move=True)
    assert not junk.exists()
    assert not (engine.settings.storage_root / "failed-upload").exists()


@pytest.mark.parametrize("change", ["touch", "append"])
def test_a_changed_server_side_video_is_refused_on_reopen(tmp_path, predictor, video, change):
    source = tmp_path / "clip.mp4"
    shutil.copyfile(video, source)
    first = SessionEngine(engine_settings(tmp_path / "sessions"), predictor=predictor)
    sid = first.create_session(source).session_id
    first.shutdown()
    if change == "touch":
        stat = source.stat()
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    else:
        with source.open("ab") as file:
            file.write(b"\x00" * 16)
    second = SessionEngine(engine_settings(tmp_path / "sessions"), predictor=predictor)
    try:
        with pytest.raises(SourceChangedError, match="changed after the session was created"):
            second.open_session(sid)
        assert second.active_sessions == 0
        assert (tmp_path / "sessions" / sid).exists()  # the masks stay for the user to export
    finally:
        second.close()


def test_reading_a_video_that_changed_under_an_open_session_is_refused(engine, tmp_path, video):
    source = tmp_path / "clip.mp4"
    shutil.copyfile(video, source)
    session = engine.session(engine.create_session(source).session_id)
    with source.open("ab") as file:
        file.write(b"\x00" * 16)
    with pytest.raises(SourceChangedError):
        session.frame_jpeg(20)
    with pytest.raises(SourceChangedError):
        session.frames[21]


def test_a_reopened_session_serves_the_same_frames_from_its_saved_index(
    tmp_path, predictor, video, monkeypatch
):
    options = VideoOptions(start_time=0.3, frame_stride=2, max_side=80)
    first = SessionEngine(engine_settings(tmp_path), predictor=predictor)
    info = first.create_session(video, options)
    before = first.session(info.session_id)
    frames = [(before.frames[k], before.frames.read_rgb(k)) for k in range(info.video.num_frames)]
    first.shutdown()

    def no_demux(source: Path) -> VideoIndex:
        raise AssertionError("the saved index is read, not built again")

    monkeypatch.setattr(VideoIndex, "build", no_demux)
    second = SessionEngine(engine_settings(tmp_path), predictor=predictor)
    try:
        reopened = second.open_session(info.session_id)
        assert reopened.video == info.video
        for k, (tensor, rgb) in enumerate(frames):
            assert torch.equal(reopened.frames[k], tensor)
            np.testing.assert_array_equal(reopened.frames.read_rgb(k), rgb)
    finally:
        second.close()


# ---- what the session describes ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov", ".webm"])
def test_every_container_the_suite_writes_becomes_a_session(engine, tmp_path, suffix):
    source = write_video(tmp_path / f"clip{suffix}", num_frames=12)
    session = engine.session(engine.create_session(source).session_id)
    assert (session.video.num_frames, session.video.width, session.video.height) == (12, 160, 120)
    assert session.frames.read_rgb(11).shape == (120, 160, 3)


def test_start_end_and_stride_select_source_frames(engine, video):
    info = engine.create_session(
        video, VideoOptions(start_time=0.5, end_time="00:00:02", frame_stride=3)
    ).video
    # 10 fps: source frames 5..19, every third -> 5, 8, 11, 14, 17
    assert info.num_frames == 5
    assert info.fps == pytest.approx(10 / 3)
    assert info.start_time == pytest.approx(0.5)
    assert info.end_time == pytest.approx(2.0)
    assert info.source.num_frames == 24
    assert info.source.duration_s == pytest.approx(2.4)


def test_max_side_shrinks_but_never_upscales(engine, video):
    shrunk = engine.session(engine.create_session(video, VideoOptions(max_side=80)).session_id)
    assert (shrunk.video.width, shrunk.video.height) == (80, 60)
    assert shrunk.frames.read_rgb(0).shape == (60, 80, 3)
    jpeg = cv2.imdecode(np.frombuffer(shrunk.frame_jpeg(3), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (60, 80, 3)
    kept = engine.create_session(video, VideoOptions(max_side=1000)).video
    assert (kept.width, kept.height) == (160, 120)


def test_clock_times_parse_to_seconds():
    options = VideoOptions(start_time="00:01:02.5", end_time="1:00:00")
    assert (options.start_time, options.end_time) == (62.5, 3600.0)


def test_end_before_start_is_rejected():
    with pytest.raises(ValueError, match="end_time must be after start_time"):
        VideoOptions(start_time=5, end_time=2)


def test_start_past_the_end_is_invalid(engine, video):
    with pytest.raises(InvalidRequestError, match="past the end"):
        engine.create_session(video, VideoOptions(start_time=60))


def test_non_video_bytes_are_a_bad_video(engine, tmp_path):
    source = tmp_path / "notes.mp4"
    source.write_bytes(b"these are not the frames you are looking for" * 50)
    with pytest.raises(BadVideoError, match="not a video"):
        engine.create_session(source)


def test_zero_frame_video_is_a_bad_video(engine, tmp_path):
    with pytest.raises(BadVideoError):
        engine.create_session(write_video(tmp_path / "empty.mp4", num_frames=0))


def test_a_truncated_file_is_a_bad_video(engine, tmp_path, video):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(BadVideoError, match=r"truncated|not a video"):
        engine.create_session(cut)


def test_too_many_frames_is_too_large(tmp_path, predictor, video):
    engine = SessionEngine(engine_settings(tmp_path, max_video_frames=10), predictor=predictor)
    try:
        with pytest.raises(VideoTooLargeError, match="more than 10 frames"):
            engine.create_session(video)
        assert engine.create_session(video, VideoOptions(frame_stride=3)).video.num_frames == 8
    finally:
        engine.close()


def test_too_long_a_selection_is_too_large(tmp_path, predictor, video):
    engine = SessionEngine(engine_settings(tmp_path, max_video_seconds=2), predictor=predictor)
    try:
        with pytest.raises(VideoTooLargeError, match="more than 2s"):
            engine.create_session(video, session_id="too-long-video")
        assert not (tmp_path / "too-long-video").exists()
        assert engine.create_session(video, VideoOptions(end_time=1.5)).video.num_frames == 15
    finally:
        engine.close()


# ---- the frames served -------------------------------------------------------------------------

CUTS = [{}, {"start_time": 0.5, "end_time": 2.1, "frame_stride": 3, "max_side": 80}]


@pytest.mark.parametrize("order", ["forward", "backward", "random"])
@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_model_frames_equal_a_full_decode_resized_and_normalised(engine, video, cut, order):
    session = engine.session(engine.create_session(video, VideoOptions(**cut)).session_id)
    size = engine.predictor.image_size
    first = round((cut.get("start_time") or 0) * 10)
    stride = cut.get("frame_stride", 1)
    decoded = full_decode(video, (size, size))
    frames = list(range(session.video.num_frames))
    if order == "backward":
        frames.reverse()
    elif order == "random":
        random.Random(3).shuffle(frames)
    for k in frames:
        session.frames.prefetch(k + 1)  # as a propagation does; the walk must not go astray
        expected = to_model_input(decoded[first + k * stride], size)
        assert torch.equal(session.frames[k], expected), f"frame {k}"


def test_frame_space_frames_equal_a_full_decode_at_frame_size(engine, video):
    session = engine.session(engine.create_session(video, VideoOptions(max_side=80)).session_id)
    decoded = full_decode(video, (80, 60))
    for k in reversed(range(session.video.num_frames)):
        np.testing.assert_array_equal(session.frames.read_rgb(k), decoded[k])


def test_model_input_is_sam2s_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(to_model_input(rgb, 32).numpy(), expected, atol=1e-5)

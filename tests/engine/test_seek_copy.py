"""The seek-friendly copy: made in the background for a long-GOP video, holding exactly the
session's frames at the model's size; the model's reads move to it once it is complete; a
reopened session reuses a complete copy and starts a partial one over; deleting a session
stops its copy."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from deployments.engine import Session, SessionEngine
from deployments.engine.frames import FrameSource, to_model_input
from deployments.engine.seek_copy import COPY_FILE, worst_seek_mpixels, worth_copying
from deployments.engine.video import SessionVideo
from deployments.engine.video_source import VideoIndex, VideoReader, select_frames
from deployments.protocol import FrameMasks, Prompt, PropagationRequest, VideoOptions
from tests.conftest import TEST_IMAGE_SIZE, engine_settings
from tests.engine.test_video_source import SIZE, encode
from tests.videos import write_video

S = TEST_IMAGE_SIZE
# Each frame of ``encode``'s clips scrolls a random texture: every frame differs from the next.
TRIM = VideoOptions(start_time=0.5, frame_stride=3)


def copying_settings(root: Path, **overrides: object):
    """Copies for any video (threshold 0), a keyframe every 8 frames."""
    return engine_settings(root, seek_copy_min_mpixels=0.0, seek_copy_gop=8, **overrides)


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 frames at 30 fps in one GOP (B-frames), 128x96."""
    return encode(tmp_path_factory.mktemp("seek_copy") / "long_gop.mp4", 240, gop=250)


@pytest.fixture
def copying(tmp_path, predictor):
    engine = SessionEngine(copying_settings(tmp_path / "sessions"), predictor=predictor)
    yield engine
    engine.close()


def wait_for_copy(session: Session, timeout_s: float = 120) -> list[tuple[int, int]]:
    """(done, total) frames as ``preparation`` reported them, until it is null."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while (preparation := session.info().preparation) is not None:
        assert preparation.stage == "seek_copy"
        seen.append((preparation.done_frames, preparation.total_frames))
        assert time.monotonic() < deadline, "the copy was not made in time"
        time.sleep(0.02)
    return seen


def source_model_frames(video: Path, options: VideoOptions) -> list[np.ndarray]:
    """The session's frames as the model's reader decodes them from the source (S x S)."""
    index = VideoIndex.build(video)
    selection = select_frames(index, options, max_frames=10_000)
    with VideoReader(video, index, selection, size=(S, S)) as reader:
        return [reader.frame(k) for k in range(selection.num_frames)]


def copy_frames(path: Path) -> list[np.ndarray]:
    index = VideoIndex.build(path)
    selection = select_frames(index, VideoOptions(), max_frames=10_000)
    with VideoReader(path, index, selection, size=(S, S)) as reader:
        return [reader.frame(k) for k in range(selection.num_frames)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12))


# ---- when a copy pays ---------------------------------------------------------------------------


def synthetic_index(keyframes: list[int], num_frames: int = 100) -> VideoIndex:
    return VideoIndex(
        pts=np.arange(num_frames),
        keyframes=np.array(keyframes),
        keyframe_dts=np.array(keyframes),
        end_pts=num_frames,
        time_base=Fraction(1, 30),
        width=100,
        height=10,
        source_size=0,
        source_mtime_ns=0,
    )


def test_worst_seek_is_the_costliest_selected_frame_from_its_keyframe():
    index = synthetic_index([0, 40, 90])
    # Frames 5, 15, ..., 95: the costliest is 85, 46 frames from keyframe 40 (1,000 pixels each).
    selection = select_frames(
        index, VideoOptions(start_time=5 / 30, frame_stride=10), max_frames=100
    )
    assert selection.source_frame(0) == 5
    assert worst_seek_mpixels(index, selection) == pytest.approx(46 * 1000 / 1e6)
    # Only frames 40..49 selected: at most 10 frames from keyframe 40.
    cut = select_frames(index, VideoOptions(start_time=40 / 30, end_time=50 / 30), max_frames=100)
    assert worst_seek_mpixels(index, cut) == pytest.approx(10 * 1000 / 1e6)


def test_a_copy_is_made_only_when_the_settings_say_it_pays(tmp_path):
    index = synthetic_index([0, 40, 90])
    video = SessionVideo(Path("x.mp4"), index, select_frames(index, VideoOptions(), max_frames=100))
    worst = worst_seek_mpixels(index, video.selection)  # 50 frames: 40..89
    assert worst == pytest.approx(0.05)
    assert worth_copying(video, engine_settings(tmp_path, seek_copy_min_mpixels=0.04))
    assert not worth_copying(video, engine_settings(tmp_path, seek_copy_min_mpixels=0.06))
    never = engine_settings(tmp_path, seek_copy_min_mpixels=0.0, seek_copy_gop=0)
    assert not worth_copying(video, never)
    one_gop = engine_settings(tmp_path, seek_copy_min_mpixels=0.0, seek_copy_gop=100)
    assert not worth_copying(video, one_gop)


def test_short_test_clips_get_no_copy_by_default(engine, video):
    session = engine.session(engine.create_session(video).session_id)
    assert session.seek_copy is None and session.info().preparation is None


# ---- the copy ---------------------------------------------------------------------------------


def test_copy_holds_the_selected_frames_at_model_size(copying, long_gop):
    session = copying.session(copying.create_session(long_gop, TRIM).session_id)
    wait_for_copy(session)
    assert session.seek_copy.state == "ready"
    files = sorted(p.name for p in session.directory.iterdir())
    assert COPY_FILE in files and not [f for f in files if f.endswith(".part")]
    expected = source_model_frames(long_gop, TRIM)
    copied = copy_frames(session.directory / COPY_FILE)
    assert len(copied) == len(expected) == session.video.num_frames == 75  # (240 - 15) / 3
    for k, frame in enumerate(copied):
        assert frame.shape == (S, S, 3)
        # Lossy but close, on a texture of random noise (the hardest case for H.264)...
        assert psnr(frame, expected[k]) > 25, f"frame {k}"
        # ... and frame k of the selection, not a neighbour.
        distances = {j: psnr(frame, expected[j]) for j in (k - 1, k, k + 1) if 0 <= j < 75}
        assert max(distances, key=distances.get) == k


def test_preparation_progresses_and_clicks_and_propagations_work_across_the_switch(
    copying, long_gop
):
    info = copying.create_session(long_gop)
    session = copying.session(info.session_id)
    assert info.preparation is not None
    assert (info.preparation.stage, info.preparation.total_frames) == ("seek_copy", 240)
    point = (SIZE[0] / 2, SIZE[1] / 2)
    # Before and while the copy is made: reads come from the source.
    session.add_prompt(Prompt(frame_index=200, obj_id=1, points=[point]))
    around = PropagationRequest(direction="both", start_frame_index=200, max_frames=8)
    assert len([e for e in session.propagate(around) if isinstance(e, FrameMasks)]) == 17
    seen = wait_for_copy(session)
    done = [d for d, _ in seen]
    assert done == sorted(done) and all(total == 240 and d <= 240 for d, total in seen)
    assert session.info().preparation is None and session.seek_copy.state == "ready"
    # After the switch: a never-visited frame, and a propagation both ways from it.
    session.add_prompt(Prompt(frame_index=17, obj_id=2, points=[point]))
    both = PropagationRequest(direction="both", start_frame_index=17, max_frames=8)
    frames = [e for e in session.propagate(both) if isinstance(e, FrameMasks)]
    assert sorted(f.frame_index for f in frames) == list(range(9, 26))
    assert all({m.obj_id for m in f.masks} == {1, 2} for f in frames)


def test_reopened_session_reuses_a_complete_copy_and_starts_a_partial_one_over(
    tmp_path, predictor, long_gop
):
    root = tmp_path / "sessions"
    first = SessionEngine(copying_settings(root), predictor=predictor)
    session = first.session(first.create_session(long_gop, TRIM).session_id)
    wait_for_copy(session)
    copy = session.directory / COPY_FILE
    made = copy.stat().st_mtime_ns
    first.shutdown()  # the replica goes away; files stay

    second = SessionEngine(copying_settings(root), predictor=predictor)
    reopened = second.open_session(session.id)
    assert reopened.info().preparation is None and reopened.seek_copy.state == "ready"
    assert copy.stat().st_mtime_ns == made  # used as it was
    reopened.add_prompt(Prompt(frame_index=40, obj_id=1, points=[(64.0, 48.0)]))
    second.shutdown()

    copy.rename(copy.with_name(f"{COPY_FILE}.dead0000.part"))  # a replica died mid-copy
    third = SessionEngine(copying_settings(root), predictor=predictor)
    try:
        again = third.open_session(session.id)
        assert again.info().preparation is not None  # started over
        wait_for_copy(again)
        assert again.seek_copy.state == "ready"
        assert [p.name for p in again.directory.glob("*.part")] == []
        assert len(copy_frames(copy)) == 75
    finally:
        third.close()


def test_deleting_a_session_mid_copy_stops_the_worker_and_leaves_no_files(
    copying, long_gop, tmp_path
):
    longer = encode(tmp_path / "longer.mp4", 900, gop=300)
    info = copying.create_session(longer)
    directory = copying.session(info.session_id).directory
    assert info.preparation is not None
    copying.delete_session(info.session_id)
    assert not directory.exists()
    assert not copying.seek_copies.busy
    # The worker goes on with the next session's copy.
    session = copying.session(copying.create_session(long_gop).session_id)
    wait_for_copy(session)
    assert session.seek_copy.state == "ready"


# ---- switching the model's reader ---------------------------------------------------------------


def test_model_reads_move_to_the_new_reader_in_the_order_asked(tmp_path, long_gop):
    """A model thread reads (and prefetches) all along while the reader is replaced: every
    read is a whole frame of one reader or the other, never the old one after the new."""
    videos = {
        "source": long_gop,
        "copy": write_video(tmp_path / "copy.avi", num_frames=240, size=(96, 72)),
        "short": encode(tmp_path / "short.mp4", 100),
    }

    def open_reader(name: str) -> VideoReader:
        index = VideoIndex.build(videos[name])
        selection = select_frames(index, VideoOptions(), max_frames=1000)
        return VideoReader(videos[name], index, selection, size=(S, S))

    visited = range(0, 238, 7)
    expected = {}
    for name in ("source", "copy"):
        with open_reader(name) as reader:
            expected[name] = {k: to_model_input(reader.frame(k), S).numpy() for k in visited}
    frames = FrameSource(open_reader("source"), open_reader("source"), S)
    served: list[tuple[int, np.ndarray]] = []
    stop = threading.Event()

    def model_thread() -> None:
        k = 0
        while not stop.is_set():
            frames.prefetch((k + 7) % 238)
            served.append((k, frames[k].numpy()))
            k = (k + 7) % 238

    reading = threading.Thread(target=model_thread)
    try:
        reading.start()
        while len(served) < 5:
            time.sleep(0.01)
        frames.switch_model_frames(lambda: open_reader("copy")).result()
        switched = len(served)
        while len(served) < switched + 5:
            time.sleep(0.01)
        stop.set()
        reading.join()
        with pytest.raises(ValueError, match="100 frames"):
            frames.switch_model_frames(lambda: open_reader("short")).result()
        np.testing.assert_array_equal(frames[7].numpy(), expected["copy"][7])  # kept
    finally:
        stop.set()
        frames.close()

    def which(k: int, tensor: np.ndarray) -> str:
        for name in ("source", "copy"):
            if np.array_equal(tensor, expected[name][k]):
                return name
        raise AssertionError(f"frame {k} came from neither reader")

    sources = [which(k, tensor) for k, tensor in served]
    assert sources[0] == "source" and sources[-1] == "copy"
    assert sources == sorted(sources, key=["source", "copy"].index)  # never back to the source

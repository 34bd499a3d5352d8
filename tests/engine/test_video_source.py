"""Frames on demand from the source video: the index, the selection, and frame accuracy of the
reader against a full sequential decode, forward, backward and at random."""

from __future__ import annotations

import random
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from deployments.engine.decoder import Decoder
from deployments.engine.still_image import ImageReader, write_image
from deployments.engine.video_index import VideoIndex
from deployments.engine.video_reader import VideoReader
from deployments.engine.video_selection import VideoSelection, select_frames
from deployments.protocol.errors import (
    BadImageError,
    BadVideoError,
    InvalidRequestError,
    SourceChangedError,
    VideoTooLargeError,
)
from deployments.protocol.types import VideoOptions
from tests.videos import CODECS, write_video

SIZE = (128, 96)
# x264 with B-frames forced (reordered packets) and a fixed keyframe interval.
X264 = "keyint={gop}:min-keyint={gop}:scenecut=0:b-adapt=0:bframes=3"
# Irregular frame times (ms) of the variable-frame-rate clip: 30 fps, a 5 s still, then 10 fps.
VFR_MS = [round(i * 1000 / 30) for i in range(60)] + [7000 + i * 100 for i in range(30)]


def encode(
    path: Path,
    num_frames: int,
    *,
    gop: int = 24,
    open_gop: bool = False,
    fps: int = 30,
    pts_ms: list[int] | None = None,
) -> Path:
    """An H.264 clip of scrolling texture and a moving bar, every frame different; with
    ``pts_ms`` the frames carry those times (a variable frame rate)."""
    params = X264.format(gop=gop) + (":open-gop=1" if open_gop else "")
    texture = np.random.default_rng(0).integers(0, 256, (SIZE[1], 2 * SIZE[0], 3), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"x264-params": params})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        if pts_ms is not None:
            stream.time_base = Fraction(1, 1000)
        for i in range(num_frames):
            rgb = texture[:, i % SIZE[0] : i % SIZE[0] + SIZE[0]].copy()
            rgb[:, (i * 3) % (SIZE[0] - 8) :][:, :8] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def full_decode(path: Path, size: tuple[int, int]) -> list[np.ndarray]:
    """Every frame by one sequential decode, converted as the reader converts them."""
    with av.open(str(path)) as container:
        return [
            frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
            for frame in container.decode(video=0)
        ]


def select(path: Path, **options: object) -> tuple[VideoIndex, VideoSelection]:
    index = VideoIndex.build(path)
    return index, select_frames(index, VideoOptions(**options), max_frames=100_000)


def expected_frames(path: Path, selection: VideoSelection) -> list[np.ndarray]:
    decoded = full_decode(path, (selection.width, selection.height))
    return [decoded[selection.source_frame(k)] for k in range(selection.num_frames)]


def assert_reads_match(path: Path, order: str, buffer_frames: int = 64, **options: object) -> None:
    index, selection = select(path, **options)
    expected = expected_frames(path, selection)
    frames = list(range(selection.num_frames))
    if order == "backward":
        frames.reverse()
    elif order == "random":
        random.Random(7).shuffle(frames)
    buffer_bytes = buffer_frames * selection.width * selection.height * 3
    with VideoReader(path, index, selection, buffer_bytes=buffer_bytes) as reader:
        for k in frames:
            np.testing.assert_array_equal(reader.frame(k), expected[k], err_msg=f"frame {k}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def clip(videos: Path) -> Path:
    """240 frames at 30 fps with B-frames, a keyframe every 24 frames."""
    return encode(videos / "clip.mp4", 240)


@pytest.fixture(scope="module")
def long_gop(videos: Path) -> Path:
    """120 frames in one GOP, as x264's default keyint 250 makes in a short clip."""
    return encode(videos / "long_gop.mp4", 120, gop=250)


@pytest.fixture(scope="module")
def vfr_mkv(videos: Path) -> Path:
    return encode(videos / "vfr.mkv", len(VFR_MS), pts_ms=VFR_MS)


# ---- index ------------------------------------------------------------------------------------


def test_index_lists_every_decoded_frame_in_presentation_order(clip):
    index = VideoIndex.build(clip)
    with av.open(str(clip)) as container:
        decode_order = [p.pts for p in container.demux(video=0) if p.size]
    with av.open(str(clip)) as container:
        decoded = [(f.pts, f.key_frame) for f in container.decode(video=0)]
    assert decode_order != sorted(decode_order)  # B-frames: the packets come reordered
    assert index.pts.tolist() == [pts for pts, _ in decoded]
    assert index.keyframes.tolist() == [i for i, (_, key) in enumerate(decoded) if key]
    assert index.keyframes.tolist() == list(range(0, 240, 24))
    assert (index.width, index.height, index.fps) == (*SIZE, pytest.approx(30))
    assert index.duration_s == pytest.approx(8.0)


def test_index_reads_back_from_its_saved_file(clip, tmp_path):
    index = VideoIndex.build(clip)
    index.save(tmp_path / "index.npz")
    loaded = VideoIndex.load(tmp_path / "index.npz")
    assert np.array_equal(loaded.pts, index.pts)
    assert np.array_equal(loaded.keyframes, index.keyframes)
    assert np.array_equal(loaded.keyframe_dts, index.keyframe_dts)
    assert loaded.source_video() == index.source_video()
    assert (loaded.time_base, loaded.end_pts) == (index.time_base, index.end_pts)


def test_index_of_a_variable_frame_rate_video_has_each_frame_time(vfr_mkv):
    index = VideoIndex.build(vfr_mkv)
    assert index.num_frames == len(VFR_MS)
    np.testing.assert_allclose(index.times[:-1], np.array(VFR_MS) / 1000)


def test_index_counts_the_frames_where_the_header_count_is_wrong(vfr_mkv):
    capture = cv2.VideoCapture(str(vfr_mkv))
    header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert header_count != len(VFR_MS)  # what the JPEG ingest trusted
    assert VideoIndex.build(vfr_mkv).num_frames == len(VFR_MS)


def test_non_video_bytes_are_a_bad_video(tmp_path):
    source = tmp_path / "notes.mp4"
    source.write_bytes(b"these are not the frames you are looking for" * 50)
    with pytest.raises(BadVideoError, match="not a video"):
        VideoIndex.build(source)


def test_a_file_without_a_video_stream_is_a_bad_video(tmp_path):
    with av.open(str(tmp_path / "tone.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), "s16", "mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
    with pytest.raises(BadVideoError, match="no video stream"):
        VideoIndex.build(tmp_path / "tone.wav")


def test_a_video_without_frames_is_a_bad_video(tmp_path):
    whole = encode(tmp_path / "whole.mkv", 10)
    with av.open(str(whole)) as container:
        first_packet = next(container.demux(video=0)).pos
    header_only = tmp_path / "header.mkv"
    header_only.write_bytes(whole.read_bytes()[:first_packet])
    with pytest.raises(BadVideoError, match="no frames"):
        VideoIndex.build(header_only)


def test_a_raw_stream_without_timestamps_is_refused(tmp_path):
    raw = tmp_path / "clip.h264"
    with (
        av.open(str(encode(tmp_path / "clip.mkv", 10))) as source,
        av.open(str(raw), "w", "h264") as out,
    ):
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    with pytest.raises(BadVideoError, match="no timestamps"):
        VideoIndex.build(raw)


def test_a_truncated_mp4_is_a_bad_video(clip, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(BadVideoError, match="truncated"):
        VideoIndex.build(cut)


def test_a_source_changed_after_indexing_is_refused(tmp_path):
    source = encode(tmp_path / "clip.mp4", 10)
    index, selection = select(source)
    encode(source, 12)
    with pytest.raises(SourceChangedError, match="changed"):
        VideoReader(source, index, selection)


def test_a_source_changed_while_it_is_read_fails_the_next_decode(tmp_path):
    source = encode(tmp_path / "clip.mp4", 10)
    index, selection = select(source)
    with VideoReader(source, index, selection) as reader:
        reader.frame(0)
        with source.open("ab") as file:
            file.write(b"appended")
        with pytest.raises(SourceChangedError):
            reader.frame(9)


def test_a_removed_source_is_refused(tmp_path):
    source = encode(tmp_path / "clip.mp4", 10)
    index, selection = select(source)
    source.unlink()
    with pytest.raises(SourceChangedError, match="removed"):
        VideoReader(source, index, selection)


# ---- selection --------------------------------------------------------------------------------


def test_start_end_and_stride_select_frames_by_timestamp(tmp_path):
    source = encode(tmp_path / "ten_fps.mp4", 24, fps=10)
    _, selection = select(source, start_time=0.5, end_time="00:00:02", frame_stride=3)
    # 10 fps: source frames 5..19, every third -> 5, 8, 11, 14, 17
    assert [selection.source_frame(k) for k in range(selection.num_frames)] == [5, 8, 11, 14, 17]
    info = selection.info
    assert info.num_frames == 5
    assert info.fps == pytest.approx(10 / 3)
    assert (info.start_time, info.end_time) == (pytest.approx(0.5), pytest.approx(2.0))
    assert (info.source.num_frames, info.source.duration_s) == (24, pytest.approx(2.4))


def test_a_cut_of_a_variable_frame_rate_video_keeps_the_frames_inside_it(vfr_mkv):
    _, selection = select(vfr_mkv, start_time=1.5, end_time=7.25)
    kept = [VFR_MS[selection.source_frame(k)] for k in range(selection.num_frames)]
    assert kept == [ms for ms in VFR_MS if 1500 <= ms < 7250]
    assert selection.info.start_time == pytest.approx(1.5)


def test_max_side_shrinks_but_never_upscales(clip):
    _, shrunk = select(clip, max_side=64)
    assert (shrunk.width, shrunk.height, shrunk.info.width) == (64, 48, 64)
    _, kept = select(clip, max_side=1000)
    assert (kept.width, kept.height) == SIZE


def test_start_past_the_end_is_invalid(clip):
    with pytest.raises(InvalidRequestError, match="past the end"):
        select(clip, start_time=60)


def test_a_cut_between_two_frames_is_invalid(vfr_mkv):
    with pytest.raises(InvalidRequestError, match="no frame"):
        select(vfr_mkv, start_time=3, end_time=6)


def test_too_many_frames_is_too_large(clip):
    with pytest.raises(VideoTooLargeError, match="more than 10 frames"):
        select_frames(VideoIndex.build(clip), VideoOptions(), max_frames=10)


def test_too_long_a_cut_is_too_large(clip):
    index = VideoIndex.build(clip)
    with pytest.raises(VideoTooLargeError, match="more than 2s"):
        select_frames(index, VideoOptions(), max_frames=1000, max_seconds=2)
    assert select_frames(index, VideoOptions(end_time=2), max_frames=1000, max_seconds=2)


# ---- reader: frame accuracy -------------------------------------------------------------------

CUTS = [
    {},
    {"start_time": 1.0, "end_time": 6.5},
    {"frame_stride": 5},
    {"start_time": 0.9, "end_time": 7, "frame_stride": 3, "max_side": 64},
    {"frame_stride": 50},
]


@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_forward_reads_equal_a_full_sequential_decode(clip, cut):
    assert_reads_match(clip, "forward", **cut)


@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_backward_reads_equal_a_full_sequential_decode(clip, cut):
    assert_reads_match(clip, "backward", **cut)


@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_random_reads_equal_a_full_sequential_decode(clip, cut):
    assert_reads_match(clip, "random", **cut)


@pytest.mark.parametrize("order", ["forward", "backward", "random"])
def test_reads_of_a_variable_frame_rate_video_equal_a_full_decode(vfr_mkv, order):
    assert_reads_match(vfr_mkv, order, start_time=1, frame_stride=2)


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_random_reads_of_an_open_gop_video_equal_a_full_decode(videos, suffix):
    source = encode(videos / f"open_gop{suffix}", 150, open_gop=True)
    assert_reads_match(source, "random")


def test_random_reads_of_mpeg_ts_which_seeks_by_decode_time_equal_a_full_decode(videos):
    assert_reads_match(encode(videos / "clip.ts", 150), "random")


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_every_container_the_suite_writes_reads_back_whole(tmp_path, suffix):
    source = write_video(tmp_path / f"clip{suffix}", num_frames=12)
    assert VideoIndex.build(source).num_frames == 12
    assert_reads_match(source, "random")


def test_a_backward_walk_through_a_long_gop_stays_within_the_buffer(long_gop):
    index, selection = select(long_gop)
    expected = expected_frames(long_gop, selection)
    frame_bytes = selection.width * selection.height * 3
    with VideoReader(long_gop, index, selection, buffer_bytes=10 * frame_bytes) as reader:
        for k in reversed(range(selection.num_frames)):
            np.testing.assert_array_equal(reader.frame(k), expected[k], err_msg=f"frame {k}")
            assert reader.buffer_nbytes() <= 10 * frame_bytes


def test_a_forward_walk_keeps_only_the_frames_ahead_of_it(clip):
    index, selection = select(clip)
    frame_bytes = selection.width * selection.height * 3
    with VideoReader(clip, index, selection, buffer_bytes=100 * frame_bytes) as reader:
        for k in range(120):
            reader.frame(k)
            assert reader.buffer_nbytes() <= 9 * frame_bytes  # the frame and 8 ahead


def test_a_walk_that_turns_back_and_jumps_reads_the_right_frames(clip):
    index, selection = select(clip)
    expected = expected_frames(clip, selection)
    walk = [*range(100, 140), *range(139, 60, -1), 230, 5, *range(200, 240), *range(30, 0, -1)]
    with VideoReader(clip, index, selection, buffer_bytes=12 * 128 * 96 * 3) as reader:
        for k in walk:
            np.testing.assert_array_equal(reader.frame(k), expected[k], err_msg=f"frame {k}")


def test_readers_on_several_threads_get_their_frames(clip):
    index, selection = select(clip)
    expected = expected_frames(clip, selection)
    failures: list[int] = []

    def read(seed: int) -> None:
        for k in random.Random(seed).sample(range(selection.num_frames), 40):
            if not np.array_equal(reader.frame(k), expected[k]):
                failures.append(k)

    with VideoReader(clip, index, selection) as reader:
        threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_a_prefetched_frame_is_decoded_before_it_is_read(clip):
    index, selection = select(clip)
    with VideoReader(clip, index, selection) as reader:
        reader.prefetch(100)
        for _ in range(1000):  # the worker decodes it in the background: wait up to 10 s
            if reader.buffer_nbytes():
                break
            time.sleep(0.01)
        assert reader.buffer_nbytes()
        np.testing.assert_array_equal(reader.frame(100), expected_frames(clip, selection)[100])


def test_frames_come_at_the_size_asked_for(clip):
    index, selection = select(clip, start_time=1, frame_stride=2)
    expected = full_decode(clip, (64, 64))[selection.source_frame(10)]
    with VideoReader(clip, index, selection, size=(64, 64)) as reader:
        np.testing.assert_array_equal(reader.frame(10), expected)


def test_frames_are_read_only(clip):
    index, selection = select(clip)
    with VideoReader(clip, index, selection) as reader, pytest.raises(ValueError):
        reader.frame(0)[0, 0] = 0


def test_a_frame_outside_the_selection_is_an_index_error(clip):
    index, selection = select(clip, end_time=1)
    with VideoReader(clip, index, selection) as reader, pytest.raises(IndexError):
        reader.frame(30)


def test_a_failing_worker_fails_reads_instead_of_hanging(clip, monkeypatch):
    def broken(*args: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(Decoder, "read", broken)
    index, selection = select(clip)
    with VideoReader(clip, index, selection) as reader, pytest.raises(RuntimeError, match="failed"):
        reader.frame(3)


def test_a_closed_reader_refuses_reads(clip):
    index, selection = select(clip)
    reader = VideoReader(clip, index, selection)
    reader.close()
    with pytest.raises(RuntimeError, match="closed"):
        reader.frame(0)


# ---- a still image ----------------------------------------------------------------------------


def test_an_image_reads_back_exactly_as_a_one_frame_video(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), np.uint8)
    info = write_image(image, tmp_path / "image.png")
    assert (info.num_frames, info.width, info.height) == (1, 70, 50)
    reader = ImageReader(tmp_path / "image.png")
    np.testing.assert_array_equal(reader.frame(0), image)
    with pytest.raises(IndexError):
        reader.frame(1)


def test_an_image_without_three_channels_is_a_bad_image(tmp_path):
    with pytest.raises(BadImageError):
        write_image(np.zeros((8, 8), np.uint8), tmp_path / "image.png")

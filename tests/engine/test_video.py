"""Video in: formats, cutting options, and every kind of bad upload."""

from __future__ import annotations

import cv2
import pytest

from deployments.engine.video import frame_path, ingest_video
from deployments.protocol import (
    BadVideoError,
    InvalidRequestError,
    VideoOptions,
    VideoTooLargeError,
)
from tests.videos import write_video


def ingest(source, tmp_path, **options):
    return ingest_video(
        source, tmp_path / "frames", VideoOptions(**options), jpeg_quality=90, max_frames=10_000
    )


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov", ".webm"])
def test_every_container_opencv_reads_is_ingested(tmp_path, suffix):
    source = write_video(tmp_path / f"clip{suffix}", num_frames=12)
    info = ingest(source, tmp_path)
    assert info.num_frames == 12
    assert (info.width, info.height) == (160, 120)
    assert len(list((tmp_path / "frames").glob("*.jpg"))) == 12


def test_start_end_and_stride_select_source_frames(tmp_path, video):
    info = ingest(video, tmp_path, start_time=0.5, end_time="00:00:02", frame_stride=3)
    # 10 fps: source frames 5..19, every third -> 5, 8, 11, 14, 17
    assert info.num_frames == 5
    assert info.fps == pytest.approx(10 / 3)
    assert info.start_time == pytest.approx(0.5)
    assert info.source.num_frames == 24
    assert info.source.duration_s == pytest.approx(2.4)


def test_max_side_shrinks_but_never_upscales(tmp_path, video):
    shrunk = ingest(video, tmp_path / "a", max_side=80)
    assert (shrunk.width, shrunk.height) == (80, 60)
    assert cv2.imread(str(frame_path(tmp_path / "a" / "frames", 0))).shape[:2] == (60, 80)
    kept = ingest(video, tmp_path / "b", max_side=1000)
    assert (kept.width, kept.height) == (160, 120)


def test_clock_times_parse_to_seconds():
    options = VideoOptions(start_time="00:01:02.5", end_time="1:00:00")
    assert (options.start_time, options.end_time) == (62.5, 3600.0)


def test_end_before_start_is_rejected():
    with pytest.raises(ValueError, match="end_time must be after start_time"):
        VideoOptions(start_time=5, end_time=2)


def test_start_past_the_end_is_invalid(tmp_path, video):
    with pytest.raises(InvalidRequestError, match="past the end"):
        ingest(video, tmp_path, start_time=60)


def test_non_video_bytes_are_a_bad_video(tmp_path):
    source = tmp_path / "notes.mp4"
    source.write_bytes(b"these are not the frames you are looking for" * 50)
    with pytest.raises(BadVideoError, match="not a video"):
        ingest(source, tmp_path)


def test_zero_frame_video_is_a_bad_video(tmp_path):
    source = write_video(tmp_path / "empty.mp4", num_frames=0)
    with pytest.raises(BadVideoError):
        ingest(source, tmp_path)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_truncated_file_is_a_bad_video(tmp_path, suffix):
    whole = write_video(tmp_path / f"whole{suffix}", num_frames=30)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(BadVideoError, match=r"truncated|not a video"):
        ingest(cut, tmp_path)


def test_too_many_frames_is_too_large(tmp_path, video):
    with pytest.raises(VideoTooLargeError, match="more than 10 frames"):
        ingest_video(video, tmp_path / "frames", VideoOptions(), jpeg_quality=90, max_frames=10)


def test_too_long_a_selection_is_refused_before_decoding(tmp_path, video):
    with pytest.raises(VideoTooLargeError, match="more than 2s"):
        ingest_video(
            video,
            tmp_path / "frames",
            VideoOptions(),
            jpeg_quality=90,
            max_frames=10_000,
            max_seconds=2,
        )
    assert not (tmp_path / "frames").exists()
    info = ingest_video(
        video,
        tmp_path / "frames",
        VideoOptions(end_time=1.5),
        jpeg_quality=90,
        max_frames=10_000,
        max_seconds=2,
    )
    assert info.num_frames == 15

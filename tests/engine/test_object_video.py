"""Videos from S3-compatible object storage, against a real SeaweedFS: the header-built index
equals the demuxed one, a session opens and clicks from range reads without reading the object
whole, bad locations are refused, and an outage of the store fails reads until it is back."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import obstore
import pytest
from obstore.store import S3Store

from deployments.engine import SessionEngine
from deployments.engine.decoder import Decoder
from deployments.engine.mp4_index import read_samples
from deployments.engine.object_video import ObjectStore, ObjectVideo, RangeFile
from deployments.engine.video_index import VideoIndex
from deployments.engine.video_reader import VideoReader
from deployments.engine.video_selection import select_frames
from deployments.protocol.errors import (
    ForbiddenPathError,
    InvalidRequestError,
    NotFoundError,
    ObjectStoreUnavailableError,
    SourceChangedError,
)
from deployments.protocol.locations import ObjectLocation
from deployments.protocol.types import Prompt, VideoOptions
from tests.conftest import engine_settings
from tests.engine.test_video_source import VFR_MS, encode, full_decode
from tests.seaweedfs_server import S3Endpoint, SeaweedFSServer
from tests.videos import write_video

BUCKET = "videos"
BLOCK_KB = 16
GOP = 24


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic videos: H.264 with B-frames (MP4 and MOV, fixed and open GOPs, a variable
    frame rate), MPEG-4 Part 2 from OpenCV, and an MKV the header cannot index."""
    d = tmp_path_factory.mktemp("object_videos")
    return {
        "clip.mp4": encode(d / "clip.mp4", 240, gop=GOP),
        "long_gop.mp4": encode(d / "long_gop.mp4", 60, gop=250),
        "open_gop.mp4": encode(d / "open_gop.mp4", 60, open_gop=True),
        "vfr.mp4": encode(d / "vfr.mp4", len(VFR_MS), pts_ms=VFR_MS),
        "clip.mov": encode(d / "clip.mov", 40),
        "opencv.mp4": write_video(d / "opencv.mp4"),
        "clip.mkv": encode(d / "clip.mkv", 40),
    }


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> S3Endpoint:
    """SeaweedFS with every clip in ``BUCKET``."""
    server = SeaweedFSServer(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        e = server.endpoint
        for name, path in clips.items():
            upload(e, name, path)
        yield e
    finally:
        server.stop()


def upload(s3: S3Endpoint, name: str, path: Path) -> None:
    store = S3Store(
        BUCKET,
        endpoint=s3.url,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
        client_options={"allow_http": True},
    )
    obstore.put(store, name, path.read_bytes())


def settings(s3: S3Endpoint, storage_root: Path, **overrides: object):
    values = dict(
        s3_endpoint_url=s3.url,
        s3_region=s3.region,
        s3_buckets=[BUCKET],
        s3_block_kb=BLOCK_KB,
        s3_cache_mb=1,
        SAM2_SERVE_S3_ACCESS_KEY_ID=s3.access_key_id,
        SAM2_SERVE_S3_SECRET_ACCESS_KEY=s3.secret_access_key,
    )
    return engine_settings(storage_root, **(values | overrides))


@pytest.fixture
def objects(s3: S3Endpoint, tmp_path: Path) -> ObjectStore:
    return ObjectStore(settings(s3, tmp_path))


@pytest.fixture
def engine(s3: S3Endpoint, tmp_path: Path, predictor):
    engine = SessionEngine(settings(s3, tmp_path / "sessions"), predictor=predictor)
    yield engine
    engine.close()


def video(objects: ObjectStore, name: str) -> ObjectVideo:
    return ObjectVideo(objects, ObjectLocation(BUCKET, name))


def assert_same_index(a: VideoIndex, b: VideoIndex) -> None:
    np.testing.assert_array_equal(a.pts, b.pts)
    np.testing.assert_array_equal(a.keyframes, b.keyframes)
    np.testing.assert_array_equal(a.keyframe_dts, b.keyframe_dts)
    assert (a.end_pts, a.time_base, a.width, a.height, a.source_size) == (
        b.end_pts,
        b.time_base,
        b.width,
        b.height,
        b.source_size,
    )


# ---- the MP4 header index -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["clip.mp4", "long_gop.mp4", "open_gop.mp4", "vfr.mp4", "clip.mov", "opencv.mp4"]
)
def test_an_objects_index_from_its_header_equals_the_demuxed_index(objects, clips, name):
    with clips[name].open("rb") as file:
        assert read_samples(file) is not None  # the header path, not the fallback
    assert_same_index(VideoIndex.build(video(objects, name)), VideoIndex.build(clips[name]))


def test_indexing_an_object_reads_its_header_and_little_else(objects, clips):
    source = video(objects, "clip.mp4")
    VideoIndex.build(source)
    assert objects.stats(source.location).bytes_read < 0.25 * clips["clip.mp4"].stat().st_size


def test_an_mkv_object_is_indexed_by_a_full_demux(objects, clips):
    with clips["clip.mkv"].open("rb") as file:
        assert read_samples(file) is None
    source = video(objects, "clip.mkv")
    assert_same_index(VideoIndex.build(source), VideoIndex.build(clips["clip.mkv"]))


def test_a_fragmented_mp4_has_no_header_index(tmp_path):
    path = tmp_path / "fragmented.mp4"
    with av.open(str(path), "w", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with path.open("rb") as file:
        assert read_samples(file) is None


def test_bytes_that_are_not_mp4_have_no_header_index(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(random.Random(0).randbytes(5000))
    with path.open("rb") as file:
        assert read_samples(file) is None


# ---- range reads ----------------------------------------------------------------------------


def test_a_range_file_reads_what_the_file_holds_from_any_position(clips):
    data = clips["clip.mp4"].read_bytes()
    fetched: list[int] = []

    def block(number: int) -> bytes:
        fetched.append(number)
        return data[number * 1000 : (number + 1) * 1000]

    file = RangeFile(block, len(data), 1000)
    rng = random.Random(3)
    for _ in range(200):
        start, size = rng.randrange(len(data)), rng.randrange(1, 5000)
        file.seek(start)
        assert file.read(size) == data[start : start + size]
    assert file.seek(-10, 2) == len(data) - 10 and file.read() == data[-10:]
    assert file.read(5) == b""
    file.seek(0)
    before = len(fetched)
    assert file.read(10) + file.read(10) == data[:20]
    assert len(fetched) == before + 1  # small reads of one block fetch it once


def test_readers_of_an_object_share_the_cache(objects, clips):
    source = video(objects, "long_gop.mp4")
    stats = objects.stats(source.location)
    with source.open() as file:
        data = file.read()
    assert data == clips["long_gop.mp4"].read_bytes() and stats.bytes_read == len(data)
    with source.open() as file:
        assert file.read() == data
    assert stats.bytes_read == len(data)


# ---- sessions -------------------------------------------------------------------------------


def test_a_session_from_s3_clicks_without_reading_the_object_whole(engine, clips, record_property):
    location = ObjectLocation.parse(f"s3://{BUCKET}/clip.mp4")
    size = clips["clip.mp4"].stat().st_size
    info = engine.create_session(location, VideoOptions())
    session = engine.session(info.session_id)
    result = session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(60, 40)]))
    assert result.masks
    first_click = engine.objects.stats(location).bytes_read
    record_property("bytes_before_first_click_fraction", first_click / size)
    assert first_click < 0.3 * size

    # frame 200 lies in the GOP of keyframe 192: about that GOP's packets are read
    with av.open(str(clips["clip.mp4"])) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    packets.sort(key=lambda p: p.pts)
    gop_bytes = sum(p.size for p in packets[192:201])
    session.add_prompt(Prompt(frame_index=200, obj_id=1, points=[(60, 40)]))
    jump = engine.objects.stats(location).bytes_read - first_click
    record_property("bytes_for_a_far_click", jump)
    record_property("gop_bytes", gop_bytes)
    assert gop_bytes <= jump <= 2 * gop_bytes + 4 * BLOCK_KB * 1024


def test_an_s3_session_reopens_on_another_engine(s3, tmp_path, predictor, engine):
    info = engine.create_session(ObjectLocation(BUCKET, "vfr.mp4"), VideoOptions(end_time=3))
    engine.shutdown()
    other = SessionEngine(settings(s3, tmp_path / "sessions"), predictor=predictor)
    try:
        session = other.open_session(info.session_id)
        assert session.info().video == info.video
        assert session.add_prompt(Prompt(frame_index=5, obj_id=1, points=[(30, 30)])).masks
    finally:
        other.close()


def test_a_bucket_not_allow_listed_is_forbidden(engine, tmp_path):
    with pytest.raises(ForbiddenPathError):
        engine.create_session(ObjectLocation("elsewhere", "clip.mp4"))
    assert not list((tmp_path / "sessions").iterdir())
    assert engine.free_slots == engine.settings.max_sessions


def test_a_missing_object_is_not_found(engine, tmp_path):
    with pytest.raises(NotFoundError):
        engine.create_session(ObjectLocation(BUCKET, "missing.mp4"))
    assert not list((tmp_path / "sessions").iterdir())


def test_a_removed_object_is_a_changed_source(objects):
    source = video(objects, "opencv.mp4")
    index = VideoIndex.build(source)
    with pytest.raises(SourceChangedError):
        index.check_source(video(objects, "gone.mp4"))


@pytest.mark.parametrize(
    "url", ["http://host/videos/clip.mp4", "gs://videos/clip.mp4", "s3://videos", "videos/a"]
)
def test_urls_other_than_s3_bucket_and_key_are_invalid(url):
    with pytest.raises(InvalidRequestError):
        ObjectLocation.parse(url)


def test_a_store_outage_fails_reads_as_unavailable_until_the_store_is_back(tmp_path, clips):
    server = SeaweedFSServer(tmp_path / "weed").start()
    try:
        upload(server.endpoint, "clip.mp4", clips["clip.mp4"])
        objects = ObjectStore(settings(server.endpoint, tmp_path, s3_cache_mb=0))
        source = video(objects, "clip.mp4")
        index = VideoIndex.build(source)
        selection = select_frames(index, VideoOptions(), max_frames=1000)
        size = (selection.width, selection.height)
        expected = full_decode(clips["clip.mp4"], size)[200]
        decoder = Decoder(source, index, size)
        with VideoReader(source, index, selection) as reader:
            reader.frame(0)
            server.stop()
            with pytest.raises(ObjectStoreUnavailableError):
                reader.frame(200)
            with pytest.raises(ObjectStoreUnavailableError):
                list(decoder.read([200], lambda: False))
            server.start()
            np.testing.assert_array_equal(reader.frame(200), expected)
            [(_, frame)] = decoder.read([200], lambda: False)
            np.testing.assert_array_equal(frame, expected)
        decoder.close()
    finally:
        server.stop()

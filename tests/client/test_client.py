"""The Python client against the real local service, in depth through ``Client``: typed
results, typed errors by code, streamed uploads and downloads with progress, propagation
iterators over NDJSON and the WebSocket, and a real 503 retried until a slot frees. Every method
of both clients runs in ``test_every_method_async.py`` and its generated synchronous twin."""

from __future__ import annotations

import json
import threading
import zipfile

import cv2
import numpy as np
import pytest

from sam2serve import (
    BadVideoError,
    CapacityError,
    Client,
    ConflictError,
    ForbiddenPathError,
    FrameOutOfRangeError,
    NotFoundError,
    RequestValidationError,
    RetryPolicy,
    ServiceUnavailableError,
    UnauthorizedError,
)
from tests.client.conftest import NUM_FRAMES, SIZE
from tests.videos import circle_at, write_video

WIDTH, HEIGHT = SIZE


def recorder(reports: list[tuple[int, int | None]]):
    """A progress callback that keeps every report."""
    return lambda done, total: reports.append((done, total))


@pytest.fixture(scope="module")
def propagated(service, video):
    """A session with two objects (a click, a box), named and propagated through the clip."""
    with Client(service.url, api_key=service.api_key) as client:
        session = client.create_session(video)
        sid = session.session_id
        first = client.add_prompt(sid, 0, points=[circle_at(0, NUM_FRAMES, SIZE)], labels=[1])
        second = client.add_prompt(sid, 0, box=(105, 10, 140, 45))
        assert (first.obj_id, second.obj_id) == (1, 2) and len(second.masks) == 2
        client.update_object(sid, 2, name="square", category="shape")
        summary = client.propagate(sid)
        assert summary.frames == NUM_FRAMES and not summary.cancelled
        yield sid
        client.delete_session(sid)


def test_upload_streams_with_progress_and_a_session_reads_back(client, video):
    reports: list[tuple[int, int | None]] = []
    session = client.create_session(video, max_side=80, progress=recorder(reports))
    size = video.stat().st_size
    assert reports[-1] == (size, size)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert (session.video.width, session.video.height) == (80, 60)
    assert session.video.source.width == WIDTH and session.status == "ready"
    sid = session.session_id
    assert sid in {s.session_id for s in client.list_sessions()}
    assert client.get_session(sid).video.num_frames == NUM_FRAMES
    jpeg = cv2.imdecode(np.frombuffer(client.frame_jpeg(sid, 3), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (60, 80, 3)
    client.delete_session(sid)
    with pytest.raises(NotFoundError) as missing:
        client.get_session(sid)
    assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_prompts_objects_clearing_and_reset(client, video):
    sid = client.create_session(video).session_id
    x, y = circle_at(2, NUM_FRAMES, SIZE)
    client.add_prompt(sid, 2, points=[(x, y), (x + 30, y)], labels=[1, 0])
    added = client.add_prompt(sid, 2, obj_id=2, box=(0.65, 0.1, 0.9, 0.4), normalized=True)
    assert [m.obj_id for m in added.masks] == [1, 2]
    assert added.masks[0].rle.to_numpy().shape == (HEIGHT, WIDTH)
    renamed = client.update_object(sid, 1, name="circle")
    assert (renamed.name, renamed.prompt_frames) == ("circle", [2])
    cleared = client.clear_prompts(sid, 2, obj_id=1)
    assert cleared.frame_index == 2 and [m.obj_id for m in cleared.masks] == [2]
    client.delete_object(sid, 2)
    assert [o.obj_id for o in client.list_objects(sid)] == [1]
    assert client.reset_session(sid).objects == []
    client.delete_session(sid)


def test_masks_pages_review_overlay_and_timeline(client, propagated):
    everything = client.masks(propagated)
    assert everything.next_start is None and len(everything.frames) == NUM_FRAMES
    page = client.masks(propagated, start=2, limit=4)
    assert [f.frame_index for f in page.frames] == [2, 3, 4, 5] and page.next_start == 6
    paged = list(client.iter_masks(propagated, page_size=5))
    assert [f.model_dump() for f in paged] == [f.model_dump() for f in everything.frames]
    square = list(client.iter_masks(propagated, start=3, end=7, obj_id=2))
    assert [f.frame_index for f in square] == [3, 4, 5, 6, 7]
    mask = square[0].masks[0]
    assert mask.obj_id == 2 and int(mask.to_numpy().sum()) == mask.area
    assert all(r.obj_id in (1, 2) for r in client.review(propagated, score_threshold=0.9))
    assert client.overlay_jpeg(propagated, 0)[:2] == b"\xff\xd8"
    objects = {o.obj_id: o for o in client.list_objects(propagated)}
    assert objects[2].name == "square" and objects[2].masked_frames == NUM_FRAMES
    timeline = client.object_timeline(propagated, 1, score_threshold=0.9)
    assert timeline.obj_id == 1 and timeline.prompt_frames == [0]
    masked = [f.frame_index for f in everything.frames for m in f.masks if m.obj_id == 1 and m.area]
    assert [i for first, last in timeline.ranges for i in range(first, last + 1)] == masked


@pytest.mark.parametrize("transport", ["ndjson", "websocket"])
def test_propagation_iterates_frames_and_ends_with_its_summary(client, propagated, transport):
    with client.propagate_stream(
        propagated, direction="forward", start_frame_index=4, transport=transport
    ) as stream:
        frames = list(stream)
    assert [f.frame_index for f in frames] == list(range(4, NUM_FRAMES))
    assert all([m.obj_id for m in f.masks] == [1, 2] for f in frames)
    assert stream.summary is not None and stream.summary.frames == NUM_FRAMES - 4
    stored = {f.frame_index: f.masks for f in client.iter_masks(propagated, start=4)}
    assert all(f.masks == stored[f.frame_index] for f in frames)


def test_a_second_propagation_is_a_conflict_and_cancel_stops_the_first(client, tmp_path):
    longer = write_video(tmp_path / "longer.mp4", num_frames=60, size=SIZE)
    sid = client.create_session(longer).session_id
    client.add_prompt(sid, 0, points=[circle_at(0, 60, SIZE)])
    with client.propagate_stream(sid, direction="forward") as run:
        assert next(run).frame_index == 0
        with pytest.raises(ConflictError) as busy:
            client.propagate(sid)
        assert busy.value.status == 409
        assert client.cancel_propagation(sid) is True
        rest = list(run)
    assert run.summary is not None and run.summary.cancelled
    assert run.summary.frames == 1 + len(rest) < 60
    assert client.cancel_propagation(sid) is False  # none runs any more
    client.delete_session(sid)


def test_exports_stream_to_files_with_progress(client, propagated, tmp_path):
    sizes = {}
    for fmt, name in [("coco", "a.json"), ("png_zip", "b.zip"), ("davis", "c.zip")]:
        reports: list[tuple[int, int | None]] = []
        path = client.export(propagated, fmt, tmp_path / name, progress=recorder(reports))
        sizes[fmt] = path.stat().st_size
        assert reports[-1] == (sizes[fmt], sizes[fmt])
    coco = json.loads((tmp_path / "a.json").read_text())
    assert len(coco["images"]) == NUM_FRAMES
    assert {c["name"] for c in coco["categories"]} == {"object", "shape"}
    with zipfile.ZipFile(tmp_path / "c.zip") as davis:
        assert davis.namelist() == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    with zipfile.ZipFile(tmp_path / "b.zip") as per_object:
        assert {n.split("_")[1] for n in per_object.namelist()} <= {"obj1.png", "obj2.png"}
    video = client.export(propagated, "mp4", tmp_path / "d.mp4", obj_id=1)
    assert video.read_bytes()[4:8] == b"ftyp"
    assert not list(tmp_path.glob("*.part"))


def test_errors_are_typed_by_code(service, client, propagated, tmp_path):
    with Client(service.url, api_key="", retry=RetryPolicy(max_attempts=1)) as anonymous:
        with pytest.raises(UnauthorizedError) as unauthorized:
            anonymous.list_sessions()
        assert unauthorized.value.status == 401
        assert anonymous.health().ready  # /health needs no key
    with pytest.raises(FrameOutOfRangeError) as out_of_range:
        client.add_prompt(propagated, NUM_FRAMES + 5, points=[(10, 10)])
    assert out_of_range.value.status == 422 and out_of_range.value.message
    with pytest.raises(RequestValidationError) as invalid:
        client.masks(propagated, limit=0)
    assert invalid.value.details["errors"][0]["loc"][-1] == "limit"
    with pytest.raises(ForbiddenPathError):
        client.create_session_from_server("../outside.mp4")
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"not a video" * 100)
    with pytest.raises(BadVideoError) as bad:
        client.create_session(not_a_video)
    assert bad.value.status == 400
    with pytest.raises(NotFoundError):
        client.delete_object(propagated, 99)


def test_a_503_is_retried_after_retry_after_until_a_slot_frees(service, client, propagated, video):
    filler = client.create_session(video).session_id  # the second and last slot
    retried: list[tuple[ServiceUnavailableError, float]] = []
    first_refusal = threading.Event()

    def note(error: ServiceUnavailableError, delay_s: float) -> None:
        retried.append((error, delay_s))
        first_refusal.set()

    def free_the_slot() -> None:
        first_refusal.wait(timeout=120)
        client.delete_session(filler)

    freer = threading.Thread(target=free_the_slot)
    freer.start()
    retry = RetryPolicy(max_attempts=60, max_wait_s=60)
    with Client(service.url, api_key=service.api_key, retry=retry, on_retry=note) as patient:
        created = patient.create_session(video)
    freer.join()
    assert created.status == "ready" and retried
    assert all(isinstance(e, CapacityError) and e.retry_after_s == 1 for e, _ in retried)
    assert all(delay == 1 for _, delay in retried)
    client.delete_session(created.session_id)


def test_a_503_past_the_retry_budget_is_raised(service, client, propagated, video):
    filler = client.create_session(video).session_id
    try:
        hasty = Client(service.url, api_key=service.api_key, retry=RetryPolicy(2))
        with hasty, pytest.raises(CapacityError) as full:
            hasty.create_session(video)
        assert full.value.status == 503 and full.value.retry_after_s == 1
    finally:
        client.delete_session(filler)


def test_one_shot_calls_health_and_models(client, video, tmp_path):
    health = client.health()
    assert health.ready and health.capacity == 2 and health.replicas == 1
    models = client.models()
    assert any(m.name == models.default and m.loaded for m in models.models)
    image = np.full((90, 120, 3), 30, np.uint8)
    cv2.circle(image, (60, 45), 20, (50, 200, 50), -1)
    png = cv2.imencode(".png", image)[1].tobytes()
    segmented = client.segment_image(png, points=[(60, 45)], labels=[1])
    assert (segmented.width, segmented.height) == (120, 90)
    assert segmented.masks[0].to_numpy().shape == (90, 120)
    uploaded: list[tuple[int, int | None]] = []
    path = client.track(
        video,
        tmp_path / "track.zip",
        frame_idx=0,
        points=[(40, 60)],
        upload_progress=recorder(uploaded),
    )
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    assert uploaded[-1][0] == video.stat().st_size


def test_results_ignore_fields_they_do_not_know():
    from sam2serve import FrameMask

    mask = FrameMask.model_validate(
        {
            "obj_id": 1,
            "rle": {"size": [2, 2], "counts": "04"},
            "bbox": [0, 0, 2, 2],
            "area": 4,
            "score": 0.9,
            "source": "propagation",
            "propagation_id": 3,
            "a_future_field": True,
        }
    )
    assert mask.propagation_id == 3 and mask.to_numpy().all()

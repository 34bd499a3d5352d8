"""End to end over HTTP: two SAM 2 replicas behind the ingress, sessions in real Redis, and a
concept detector (SAM 3, random weights) for text prompts."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import cv2
import numpy as np
import pytest
import ray
from pycocotools import mask as mask_utils
from ray import serve

from deployments.protocol import ServiceSettings
from session_store import open_store
from tests.serve.concepts import Concept, concept, detector_settings
from tests.serve.conftest import deploy, stack_settings

NUM_FRAMES = 16
TEXT_FRAME = 3  # where the text prompts go


@pytest.fixture(scope="module")
def grasper(video) -> Concept:
    """Three instances of "grasper" on the text frame at the stack's score threshold."""
    return concept(video, TEXT_FRAME, "grasper", count=3)


@pytest.fixture(scope="module")
def stack(http_port, redis_server, tmp_path_factory, grasper):
    gauze = len(grasper.instances("gauze"))
    assert gauze >= 1
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"),
        redis_url=redis_server.url,
        detector=detector_settings(grasper.threshold),
        detector_num_cpus=0,
        max_objects=3 + gauze - 1,  # "gauze" after "grasper" on the text frame passes it
    )
    return deploy(http_port, "app", settings)


@pytest.fixture
def clean(stack):
    """Delete the test's sessions afterwards so every test starts with free slots."""
    yield
    for session in stack.client.get("/api/v1/sessions").json()["sessions"]:
        stack.client.delete(f"/api/v1/sessions/{session['session_id']}")


async def _create_two(stack, video):
    async with stack.async_client() as client:

        async def create():
            with video.open("rb") as data:
                files = {"file": ("clip.mp4", data.read(), "video/mp4")}
            return await client.post("/api/v1/sessions", files=files)

        return await asyncio.gather(create(), create())


def test_two_sessions_created_together_land_on_different_replicas(stack, video, clean):
    first, second = asyncio.run(_create_two(stack, video))
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["replica"] != second.json()["replica"]


def test_upload_clicks_stream_masks_delete_all_on_the_owner(stack, video, clean):
    created = stack.upload(video, max_side="160")
    assert created.status_code == 201, created.text
    session = created.json()
    sid, owner = session["session_id"], session["replica"]
    assert session["video"]["num_frames"] == NUM_FRAMES and session["status"] == "ready"
    base = f"/api/v1/sessions/{sid}"

    one = stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    two = stack.client.post(
        f"{base}/prompts", json={"frame_index": 5, "box": [100, 10, 150, 50], "obj_id": 2}
    )
    assert (one.status_code, two.status_code) == (200, 200), (one.text, two.text)
    assert one.json()["obj_id"] == 1 and [m["obj_id"] for m in two.json()["masks"]] == [2]
    assert stack.client.get(base).json()["replica"] == owner

    lines = []
    with stack.client.stream(
        "POST",
        f"{base}/propagate",
        json={"direction": "both"},
        headers={"Accept": "application/x-ndjson"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    *frames, done = lines
    assert all(f["type"] == "frame" for f in frames) and done["type"] == "done"
    assert sorted(f["frame_index"] for f in frames) == list(range(NUM_FRAMES))
    assert all([m["obj_id"] for m in f["masks"]] == [1, 2] for f in frames)
    assert done["frames"] == NUM_FRAMES and done["cancelled"] is False

    masks = stack.client.get(f"{base}/masks", params={"obj_id": 2}).json()["frames"]
    assert [f["frame_index"] for f in masks] == list(range(NUM_FRAMES))
    paged, start = [], 3
    while start is not None:  # pages of 5 frames from frame 3, following next_start
        page = stack.client.get(f"{base}/masks", params={"start": start, "limit": 5}).json()
        assert len(page["frames"]) <= 5
        paged += [f["frame_index"] for f in page["frames"]]
        start = page["next_start"]
    assert paged == list(range(3, NUM_FRAMES))
    too_many = stack.client.get(f"{base}/masks", params={"limit": 10**6})
    assert too_many.status_code == 422
    rle = masks[3]["masks"][0]["rle"]
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.shape == (120, 160) and int(decoded.sum()) == masks[3]["masks"][0]["area"]

    objects = stack.client.get(f"{base}/objects").json()["objects"]
    assert [(o["obj_id"], o["prompt_frames"], o["masked_frames"] >= 0) for o in objects] == [
        (1, [0], True),
        (2, [5], True),
    ]
    assert stack.client.get(base).json()["replica"] == owner
    assert stack.client.get(f"{base}/frames/3").headers["content-type"] == "image/jpeg"

    assert stack.client.delete(base).status_code == 204
    assert stack.client.get(base).status_code == 404
    assert stack.client.delete(base).status_code == 404
    assert (stack.settings["storage_root"] + f"/{sid}") not in str(list(_tree(stack)))


def test_json_propagation_summary_and_prompt_edits(stack, video, clean):
    sid = stack.upload(video).json()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    stack.client.post(f"{base}/prompts", json={"frame_index": 2, "points": [[40, 60]]})
    summary = stack.client.post(f"{base}/propagate", json={"direction": "forward"})
    assert summary.status_code == 200 and summary.json()["frames"] == NUM_FRAMES - 2
    patched = stack.client.patch(f"{base}/objects/1", json={"name": "grasper", "category": "tool"})
    assert (patched.json()["name"], patched.json()["category"]) == ("grasper", "tool")
    cleared = stack.client.delete(f"{base}/frames/2/prompts", params={"obj_id": 1})
    assert cleared.status_code == 200 and cleared.json()["frame_index"] == 2
    assert stack.client.delete(f"{base}/objects/1").status_code == 204
    assert stack.client.get(f"{base}/objects").json()["objects"] == []
    reset = stack.client.post(f"{base}/reset")
    assert reset.status_code == 200 and reset.json()["objects"] == []


def test_click_on_b_returns_while_a_propagates_on_the_same_replica(stack, tmp_path, clean):
    from tests.videos import write_video

    long_video = write_video(tmp_path / "long.mp4", num_frames=60)
    sessions = [stack.upload(long_video).json() for _ in range(3)]
    by_replica: dict[str, list[str]] = {}
    for s in sessions:
        by_replica.setdefault(s["replica"], []).append(s["session_id"])
    a, b = next(ids for ids in by_replica.values() if len(ids) == 2)
    for sid in (a, b):
        stack.client.post(
            f"/api/v1/sessions/{sid}/prompts", json={"frame_index": 0, "points": [[40, 60]]}
        )
    frames_seen: list[float] = []
    finished = threading.Event()

    def propagate_a() -> None:
        with stack.client.stream(
            "POST",
            f"/api/v1/sessions/{a}/propagate",
            json={"direction": "forward"},
            headers={"Accept": "application/x-ndjson"},
        ) as response:
            for line in response.iter_lines():
                if line and json.loads(line)["type"] == "frame":
                    frames_seen.append(time.perf_counter())
        finished.set()

    runner = threading.Thread(target=propagate_a)
    runner.start()
    while len(frames_seen) < 3:
        time.sleep(0.02)
    before = len(frames_seen)
    click = stack.client.post(
        f"/api/v1/sessions/{b}/prompts", json={"frame_index": 9, "points": [[60, 60]]}
    )
    during = len(frames_seen)
    b_returned_before_a_finished = not finished.is_set()
    runner.join()
    assert click.status_code == 200
    assert b_returned_before_a_finished
    assert during - before <= 3  # A streamed on; B waited for about one of A's frames
    assert len(frames_seen) == 60


def test_unknown_session_and_bad_inputs_get_contract_errors(stack, tmp_path, clean):
    missing = stack.client.get("/api/v1/sessions/nosuchsession")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    bad = stack.upload(junk)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_video"
    wrong_type = stack.client.post(
        "/api/v1/sessions", content=b"x", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    no_file = stack.client.post("/api/v1/sessions", files={"other": ("a", b"x")})
    assert no_file.status_code == 422
    assert list(_tree(stack)) == []  # nothing left behind by the failures


def test_health_docs_and_openapi(stack):
    health = stack.client.get("/health").json()
    assert health["ready"] and health["replicas"] == 2 and health["capacity"] == 4
    assert stack.client.get("/docs").status_code == 200
    paths = stack.client.get("/openapi.json").json()["paths"]
    assert "/api/v1/sessions/{session_id}/propagate" in paths


def _tree(stack):
    """Session directories and uploads left under the storage root."""
    from pathlib import Path

    root = Path(stack.settings["storage_root"])
    uploads = list((root / ".uploads").glob("*")) if (root / ".uploads").exists() else []
    return [p for p in root.glob("*") if p.name != ".uploads"] + uploads


# ---- text prompts (the concept detector) -----------------------------------------------------


def _text_prompt(stack, base, text="grasper", **extra):
    body = {"frame_index": TEXT_FRAME, "text": text, **extra}
    return stack.client.post(f"{base}/prompts", json=body)


def _decoded(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _stored_names(redis_server, sid: str) -> list[tuple[int, str | None, str | None]]:
    async def read():
        store = open_store(ServiceSettings(redis_url=redis_server.url))
        try:
            return await store.objects(sid)
        finally:
            await store.close()

    return sorted((o.obj_id, o.name, o.category) for o in asyncio.run(read()))


def test_a_text_prompt_makes_each_instance_an_object_with_its_mask_and_name(
    stack, video, grasper, redis_server, clean
):
    base = f"/api/v1/sessions/{stack.upload(video).json()['session_id']}"
    answer = _text_prompt(stack, base)
    assert answer.status_code == 200, answer.text
    body, expected = answer.json(), grasper.instances()
    named = [(i, f"grasper {i}", "grasper") for i in (1, 2, 3)]
    assert [(o["obj_id"], o["name"], o["category"]) for o in body["objects"]] == named
    assert not any(o["matched"] for o in body["objects"]) and body["exact"] is True
    scores = [o["detector_score"] for o in body["objects"]]
    assert scores == pytest.approx([i.score for i in expected], abs=1e-5)
    masks = {m["obj_id"]: _decoded(m["rle"]) for m in body["masks"]}
    for obj_id, instance in zip((1, 2, 3), expected, strict=True):  # SAM 2 given the mask
        union = (masks[obj_id] | instance.mask).sum()
        assert (masks[obj_id] & instance.mask).sum() / union > 0.8
    listed = stack.client.get(f"{base}/objects").json()["objects"]
    assert [(o["obj_id"], o["name"], o["category"]) for o in listed] == named
    assert _stored_names(redis_server, base.rsplit("/", 1)[1]) == named  # kept for a rebuild

    again = _text_prompt(stack, base)  # the same text on the same frame: no duplicates
    assert [(o["obj_id"], o["matched"]) for o in again.json()["objects"]] == [
        (1, True),
        (2, True),
        (3, True),
    ]
    assert len(stack.client.get(f"{base}/objects").json()["objects"]) == 3


def test_bad_text_prompts_get_4xx_and_change_nothing(stack, video, grasper, clean):
    base = f"/api/v1/sessions/{stack.upload(video).json()['session_id']}"
    assert _text_prompt(stack, base).status_code == 200  # 3 objects of max_objects
    for text, extra in [
        ("", {}),
        ("   ", {}),
        ("x" * 201, {}),  # DetectorSettings.max_text_chars
        ("grasper", {"points": [[40, 60]]}),
        ("grasper", {"exemplar_boxes": [[0, 0, 9, 9]], "exemplar_labels": [1, 0]}),
    ]:
        refused = _text_prompt(stack, base, text, **extra)
        assert refused.status_code == 422, (text, extra, refused.text)
    too_many = _text_prompt(stack, base, "gauze")
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "too_many_objects"
    assert len(stack.client.get(f"{base}/objects").json()["objects"]) == 3  # none half-added


def test_redetection_streams_the_objects_it_starts_before_their_frame(stack, video, clean):
    base = f"/api/v1/sessions/{stack.upload(video).json()['session_id']}"
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    request = {"direction": "forward", "redetect": {"text": "grasper", "every_n_frames": 8}}
    with stack.client.stream(
        "POST", f"{base}/propagate", json=request, headers={"Accept": "application/x-ndjson"}
    ) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    added = [i for i, line in enumerate(lines) if line["type"] == "object_added"]
    assert added and lines[-1]["type"] == "done", lines[-1]
    for i in added:
        event, frame = lines[i], next(f for f in lines[i:] if f["type"] == "frame")
        assert event["frame_index"] == frame["frame_index"] and event["category"] == "grasper"
        assert event["obj_id"] in [m["obj_id"] for m in frame["masks"]]
    listed = {o["obj_id"]: o["name"] for o in stack.client.get(f"{base}/objects").json()["objects"]}
    assert all(listed[lines[i]["obj_id"]] == lines[i]["name"] for i in added)


def test_text_on_an_image_answers_the_detectors_instances(stack, grasper):
    png = cv2.imencode(".png", cv2.cvtColor(grasper.frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    image = base64.b64encode(png).decode()
    alone = stack.client.post("/api/v1/image/segment", json={"image": image, "text": "grasper"})
    assert alone.status_code == 200, alone.text
    expected = grasper.instances()
    instances = alone.json()["instances"]
    assert alone.json()["masks"] == [] and len(instances) == len(expected)
    for got, want in zip(instances, expected, strict=True):
        assert np.array_equal(_decoded(got["rle"]), want.mask)
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert got["box"] == pytest.approx(list(want.box), abs=1e-3)
    files = {"file": ("frame.png", png, "image/png")}
    form = {"prompts": json.dumps({"points": [[40, 60]]}), "text": "grasper"}
    both = stack.client.post("/api/v1/image/segment", files=files, data=form).json()
    assert len(both["masks"]) == 1 and len(both["instances"]) == len(expected)


def test_a_detector_killed_mid_request_answers_503_and_the_session_keeps_all(stack, video, clean):
    """Last in the module: the detector's replica is replaced afterwards."""
    sid = stack.upload(video).json()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    stack.client.post(f"{base}/prompts", json={"frame_index": TEXT_FRAME, "points": [[40, 60]]})
    before = (stack.client.get(f"{base}/objects").json(), stack.client.get(f"{base}/masks").json())
    prefix = "SERVE_REPLICA::app#ConceptDetector#"
    (name,) = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    ]
    detector = serve.get_deployment_handle("ConceptDetector", app_name="app")
    answers = []
    sender = threading.Thread(target=lambda: answers.append(_text_prompt(stack, base)))
    sender.start()
    deadline = time.monotonic() + 60
    while detector.status.remote().result()["in_flight"] == 0:
        assert time.monotonic() < deadline and sender.is_alive()
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    sender.join()
    (answer,) = answers
    assert answer.status_code == 503 and answer.headers["retry-after"] == "7", answer.text
    assert answer.json()["error"]["code"] == "detector_lost"
    after = (stack.client.get(f"{base}/objects").json(), stack.client.get(f"{base}/masks").json())
    assert after == before
    assert stack.client.get(base).json()["replica"] is not None  # the session was not rebuilt

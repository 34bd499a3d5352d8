"""Every other route of the contract over HTTP on the real stack: WebSocket propagation, exports
read back, /track as existing clients call it, image segmentation, overlays, the review list,
server-side videos and the model list."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
import zipfile

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from deployments.engine.precision import resolve_compute_dtype
from tests.serve.conftest import deploy, stack_settings
from tests.videos import circle_at, write_video

NUM_FRAMES = 16


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_root")
    write_video(root / "clip.mp4", num_frames=NUM_FRAMES)
    return root


@pytest.fixture(scope="module")
def stack(http_port, tmp_path_factory, video_root):
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"), video_root=str(video_root), max_sessions=3
    )
    return deploy(http_port, "routes", settings)


@pytest.fixture(scope="module")
def tracked(stack, video):
    """A session with two objects propagated through the clip."""
    sid = stack.upload(video).json()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "box": [100, 10, 150, 50]})
    stack.client.patch(f"{base}/objects/2", json={"category": "tool"})
    assert stack.client.post(f"{base}/propagate", json={}).json()["frames"] == NUM_FRAMES
    yield base
    stack.client.delete(base)


def stored_masks(stack, base) -> dict[tuple[int, int], np.ndarray]:
    frames = stack.client.get(f"{base}/masks").json()["frames"]
    return {
        (f["frame_index"], m["obj_id"]): mask_utils.decode(
            {"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()}
        ).astype(bool)
        for f in frames
        for m in f["masks"]
    }


def leftovers(stack, expected: dict[str, int], wait_s: float = 30.0) -> dict[str, int]:
    """Session directories, uploads and export spools under the storage root, once they match
    ``expected`` or ``wait_s`` passes: spools are removed by a background task that runs after
    the last byte is sent, so a client can finish reading a moment before the file goes."""
    from pathlib import Path

    root = Path(stack.settings["storage_root"])
    deadline = time.monotonic() + wait_s
    while True:
        sessions = [p for p in root.iterdir() if not p.name.startswith(".")]
        spools = {
            name: len(list((root / name).glob("*"))) if (root / name).exists() else 0
            for name in (".uploads", ".exports")
        }
        found = {"sessions": len(sessions), **spools}
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def ws_url(stack, path: str) -> str:
    return str(stack.client.base_url).rstrip("/").replace("http://", "ws://") + path


def test_websocket_streams_the_same_messages_then_closes(stack, tracked):
    with connect(ws_url(stack, f"{tracked}/propagate/ws")) as socket:
        socket.send(json.dumps({"direction": "forward", "start_frame_index": 4}))
        messages = [json.loads(m) for m in socket]
    *frames, done = messages
    assert [f["frame_index"] for f in frames] == list(range(4, NUM_FRAMES))
    assert all(f["type"] == "frame" and len(f["masks"]) == 2 for f in frames)
    assert done == {**done, "type": "done", "frames": NUM_FRAMES - 4, "cancelled": False}


def test_websocket_disconnect_stops_the_propagation(stack, tmp_path):
    long_video = write_video(tmp_path / "long.mp4", num_frames=80)
    sid = stack.upload(long_video).json()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    with connect(ws_url(stack, f"{base}/propagate/ws")) as socket:
        socket.send(json.dumps({"direction": "forward"}))
        socket.recv()
        socket.recv()
    for _ in range(100):  # the replica stops after the frame in flight
        if stack.client.get(base).json()["status"] == "ready":
            break
        import time

        time.sleep(0.2)
    session = stack.client.get(base).json()
    assert session["status"] == "ready" and session["objects"][0]["masked_frames"] < 40
    assert stack.client.post(f"{base}/propagate", json={"max_frames": 1}).status_code == 200
    stack.client.delete(base)


def test_websocket_errors_are_messages_with_close_codes(stack):
    with connect(ws_url(stack, "/api/v1/sessions/no-such-session/propagate/ws")) as socket:
        socket.send(json.dumps({"direction": "forward"}))
        message = json.loads(socket.recv())
        with pytest.raises(ConnectionClosed):
            socket.recv()
    assert message["type"] == "error" and message["error"]["code"] == "not_found"
    assert socket.close_code == 4404


def test_coco_export_decodes_to_the_masks_the_api_returned(stack, tracked):
    response = stack.client.get(f"{tracked}/export", params={"format": "coco"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    coco = response.json()
    masks = stored_masks(stack, tracked)
    assert len(coco["images"]) == NUM_FRAMES
    assert {c["name"] for c in coco["categories"]} == {"object", "tool"}
    for annotation in coco["annotations"]:
        segmentation = annotation["segmentation"]
        decoded = mask_utils.decode(
            {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        ).astype(bool)
        assert (decoded == masks[(annotation["image_id"] - 1, annotation["obj_id"])]).all()
    assert len(coco["annotations"]) == sum(1 for m in masks.values() if m.any())


def test_png_zip_and_davis_exports(stack, tracked):
    masks = stored_masks(stack, tracked)
    pngs = zipfile.ZipFile(
        io.BytesIO(stack.client.get(f"{tracked}/export", params={"format": "png_zip"}).content)
    )
    assert len(pngs.namelist()) == NUM_FRAMES * 2
    davis = zipfile.ZipFile(
        io.BytesIO(stack.client.get(f"{tracked}/export", params={"format": "davis"}).content)
    )
    assert sorted(davis.namelist()) == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    labels = np.array(Image.open(io.BytesIO(davis.read("00007.png"))))
    expected = np.zeros((120, 160), np.uint8)
    for obj_id in (1, 2):
        expected[masks[(7, obj_id)]] = obj_id
    assert (labels == expected).all()


def test_mp4_export_plays_with_the_sessions_frames_and_size(stack, tracked, tmp_path):
    response = stack.client.get(f"{tracked}/export", params={"format": "mp4"})
    assert response.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(response.content)
    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = list(container.decode(video=0))
        assert container.streams.video[0].codec_context.name == "h264"
    assert len(frames) == NUM_FRAMES and (frames[0].width, frames[0].height) == (160, 120)


def test_export_of_an_unknown_format_or_object(stack, tracked):
    assert stack.client.get(f"{tracked}/export", params={"format": "gif"}).status_code == 422
    missing = stack.client.get(f"{tracked}/export", params={"format": "coco", "obj_id": 9})
    assert missing.status_code == 404


def test_frames_overlay_and_review(stack, tracked):
    overlay = stack.client.get(f"{tracked}/frames/3/overlay")
    assert overlay.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(overlay.content, np.uint8), 1).shape == (120, 160, 3)
    frame = stack.client.get(f"{tracked}/frames/3")
    assert "max-age" in frame.headers["cache-control"]
    assert stack.client.get(f"{tracked}/frames/99").status_code == 422
    review = stack.client.get(f"{tracked}/review", params={"score_threshold": 1.0}).json()
    values = [f["value"] for f in review["frames"]]
    assert values == sorted(values) and {f["reason"] for f in review["frames"]} <= {
        "low_score",
        "area_jump",
        "lost",
    }


def test_object_timeline_and_mask_sources(stack, tracked):
    timeline = stack.client.get(f"{tracked}/objects/1/timeline", params={"score_threshold": 1})
    assert timeline.status_code == 200
    body = timeline.json()
    masks = stack.client.get(f"{tracked}/masks", params={"obj_id": 1}).json()["frames"]
    masked = [f["frame_index"] for f in masks if f["masks"][0]["area"] > 0]
    assert [f for first, last in body["ranges"] for f in range(first, last + 1)] == masked
    assert body["obj_id"] == 1 and body["prompt_frames"] == [0]
    review = stack.client.get(f"{tracked}/review", params={"score_threshold": 1}).json()
    assert body["review"] == [
        {k: item[k] for k in ("frame_index", "reason", "value")}
        for item in review["frames"]
        if item["obj_id"] == 1
    ]
    sources = {
        f["frame_index"]: (m["source"], m["propagation_id"]) for f in masks for m in f["masks"]
    }
    assert sources.pop(0) == ("prompt", None)  # other tests propagate this session again
    assert sorted(sources) == list(range(1, NUM_FRAMES))
    assert {source for source, _ in sources.values()} == {"propagation"}
    assert all(propagation >= 1 for _, propagation in sources.values())
    assert stack.client.get(f"{tracked}/objects/9/timeline").status_code == 404


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_track_as_existing_clients_call_it(stack, video, tmp_path, tool):
    x, y = circle_at(3, NUM_FRAMES, (160, 120))
    base = str(stack.client.base_url).rstrip("/")
    out = tmp_path / "masks.zip"
    if tool == "curl":
        command = [
            "curl",
            "-sS",
            "-L",
            "-o",
            str(out),
            "-X",
            "POST",
            "-F",
            f"video=@{video}",
            f"{base}/track?frame_idx=3&points={x:.0f},{y:.0f}&points={x + 2:.0f},{y:.0f}",
        ]
    else:
        command = [
            "wget",
            "-q",
            "--method=POST",
            "--header=Content-Type: application/octet-stream",
            f"--body-file={video}",
            "-O",
            str(out),
            f"{base}/track?frame_idx=0&points=40,60",
        ]
    subprocess.run(command, check=True, timeout=300)
    with zipfile.ZipFile(out) as archive:
        names = sorted(archive.namelist())
        first = cv2.imdecode(np.frombuffer(archive.read(names[0]), np.uint8), 0)
    assert names == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    assert first.shape == (120, 160) and set(np.unique(first)) <= {0, 255}
    expected = {"sessions": 1, ".uploads": 0, ".exports": 0}  # only `tracked`
    assert leftovers(stack, expected) == expected


def test_track_rejects_bad_points(stack, video):
    with video.open("rb") as data:
        response = stack.client.post(
            "/track", params={"points": "1;2"}, files={"video": ("v.mp4", data)}
        )
    assert response.status_code == 422


def _png_bytes() -> bytes:
    image = np.full((90, 120, 3), 30, np.uint8)
    cv2.circle(image, (60, 45), 20, (50, 200, 50), -1)
    return cv2.imencode(".png", image)[1].tobytes()


def test_image_segmentation_multipart_and_base64(stack):
    multipart = stack.client.post(
        "/api/v1/image/segment",
        files={"file": ("i.png", _png_bytes(), "image/png")},
        data={"prompts": json.dumps({"points": [[60, 45]], "labels": [1]})},
    )
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert (body["width"], body["height"]) == (120, 90) and body["inference_ms"] > 0
    assert body["masks"][0]["rle"]["size"] == [90, 120]
    encoded = base64.b64encode(_png_bytes()).decode()
    as_json = stack.client.post(
        "/api/v1/image/segment", json={"image": encoded, "box": [40, 25, 80, 65]}
    )
    assert as_json.status_code == 200 and len(as_json.json()["masks"]) == 1
    bad = stack.client.post(
        "/api/v1/image/segment",
        json={"image": base64.b64encode(b"no image").decode(), "points": [[1, 1]]},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_image"


def test_without_a_detector_text_gets_409_naming_the_setting(stack, tracked):
    encoded = base64.b64encode(_png_bytes()).decode()
    for path, body in [
        (f"{tracked}/prompts", {"frame_index": 0, "text": "grasper"}),
        (f"{tracked}/propagate", {"redetect": {"text": "grasper", "every_n_frames": 5}}),
        ("/api/v1/image/segment", {"image": encoded, "text": "grasper"}),
    ]:
        refused = stack.client.post(path, json=body)
        assert refused.status_code == 409, (path, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "detector_unavailable" and error["details"] == {
            "setting": "detector"
        }


def test_server_side_videos_stay_inside_video_root(stack, video_root, tmp_path):
    outside = write_video(tmp_path / "outside.mp4", num_frames=4)
    (video_root / "escape.mp4").symlink_to(outside)
    cases = {
        "../outside.mp4": 403,
        str(outside): 403,
        "escape.mp4": 403,
        "missing.mp4": 404,
    }
    for path, status in cases.items():
        response = stack.client.post("/api/v1/sessions", json={"video_path": path})
        assert response.status_code == status, (path, response.text)
    created = stack.client.post("/api/v1/sessions", json={"video_path": "clip.mp4", "max_side": 80})
    assert created.status_code == 201 and created.json()["video"]["width"] == 80
    assert (video_root / "clip.mp4").exists()  # a server-side video is never removed
    stack.client.delete(f"/api/v1/sessions/{created.json()['session_id']}")


def test_a_server_side_video_that_changes_is_refused_and_never_removed(stack, video_root):
    source = write_video(video_root / "changing.mp4", num_frames=NUM_FRAMES)
    sid = stack.client.post("/api/v1/sessions", json={"video_path": "changing.mp4"}).json()[
        "session_id"
    ]
    base = f"/api/v1/sessions/{sid}"
    assert stack.client.get(f"{base}/frames/2").status_code == 200
    with source.open("ab") as file:
        file.write(b"\x00" * 16)
    changed = stack.client.get(f"{base}/frames/12")
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "source_changed"
    assert stack.client.delete(base).status_code == 204
    assert source.exists()


def test_models_list_the_registry_and_what_replicas_loaded(stack):
    models = stack.client.get("/api/v1/models").json()
    assert models["default"] == "sam2.1_hiera_tiny"
    by_name = {m["name"]: m for m in models["models"]}
    assert len(by_name) == 8 and by_name["sam2.1_hiera_tiny"]["loaded"] is True
    assert len(by_name["sam2.1_hiera_tiny"]["replicas"]) == 2
    assert by_name["sam2_hiera_large"]["loaded"] is False
    auto = str(resolve_compute_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    tiny = by_name["sam2.1_hiera_tiny"]
    assert (tiny["compute_dtype"], tiny["device"]) == (auto, "cpu")
    assert tiny["compile"] == "none" and tiny["warmup_s"] > 0
    assert by_name["sam2_hiera_large"]["compute_dtype"] is None
    assert by_name["sam2_hiera_large"]["warmup_s"] is None

"""API keys (every route but /health; a session is visible only to the key that created it) and
expiry (an idle session is removed: model state, files and store keys)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployments.protocol import ServiceSettings
from tests.serve.conftest import deploy, stack_settings
from tests.videos import write_video

KEY_A, KEY_B = "key-a-0123456789", "key-b-0123456789"


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video_root")
    write_video(root / "clip.mp4", num_frames=8)
    return root


@pytest.fixture(scope="module")
def stack(http_port, redis_server, video_root, tmp_path_factory):
    """Keys, a short TTL, small limits, a Redis store and VIDEO_ROOT: what a deployment has."""
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"),
        redis_url=redis_server.url,
        video_root=str(video_root),
        max_image_bytes=100_000,
        api_keys=[KEY_A, KEY_B],
        session_ttl_s=6,
        expiry_check_s=1,
        min_replicas=1,
        max_replicas=1,
        max_sessions=3,
        max_upload_bytes=300_000,
    )
    return deploy(http_port, "secure", settings)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(stack, video, key: str):
    with video.open("rb") as data:
        return stack.client.post(
            "/api/v1/sessions", files={"file": ("v.mp4", data)}, headers=auth(key)
        )


def test_every_route_but_health_needs_a_key(stack):
    assert stack.client.get("/health").status_code == 200
    for path in ("/api/v1/sessions", "/api/v1/models", "/api/v1/sessions/x/masks"):
        missing = stack.client.get(path)
        assert missing.status_code == 401, path
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        assert stack.client.get(path, headers=auth("wrong")).status_code == 401
    assert stack.client.get("/api/v1/models", headers=auth(KEY_A)).status_code == 200


def test_a_session_is_visible_only_to_the_key_that_created_it(stack, video):
    created = upload(stack, video, KEY_A)
    assert created.status_code == 201, created.text
    base = f"/api/v1/sessions/{created.json()['session_id']}"
    assert stack.client.get(base, headers=auth(KEY_A)).status_code == 200
    assert stack.client.get(base, headers=auth(KEY_B)).status_code == 404
    other_click = stack.client.post(
        f"{base}/prompts", headers=auth(KEY_B), json={"frame_index": 0, "points": [[1, 1]]}
    )
    assert other_click.status_code == 404
    assert stack.client.delete(base, headers=auth(KEY_B)).status_code == 404
    listed_b = stack.client.get("/api/v1/sessions", headers=auth(KEY_B)).json()["sessions"]
    listed_a = stack.client.get("/api/v1/sessions", headers=auth(KEY_A)).json()["sessions"]
    assert listed_b == [] and [s["session_id"] for s in listed_a] == [base.rsplit("/", 1)[1]]
    assert stack.client.delete(base, headers=auth(KEY_A)).status_code == 204


def test_an_idle_session_expires_with_all_its_files(stack, video):
    session = upload(stack, video, KEY_A).json()
    sid = session["session_id"]
    directory = Path(stack.settings["storage_root"]) / sid
    assert directory.exists()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and directory.exists():
        time.sleep(0.5)
    assert not directory.exists()
    response = stack.client.get(f"/api/v1/sessions/{sid}", headers=auth(KEY_A))
    assert response.status_code == 404
    assert stack.client.get("/api/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == []


def test_a_propagation_longer_than_the_ttl_keeps_the_session_and_its_masks(stack, tmp_path):
    """Expiry counts idle time: the TTL is renewed while frames flow and restarts at the end."""
    clip = write_video(tmp_path / "long.mp4", num_frames=120, size=(64, 48))
    sid = upload(stack, clip, KEY_A).json()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    click = {"frame_index": 0, "points": [[12, 24]]}
    assert stack.client.post(f"{base}/prompts", json=click, headers=auth(KEY_A)).is_success
    response = stack.client.post(
        f"{base}/propagate", json={"direction": "forward"}, headers=auth(KEY_A)
    )
    ended = datetime.now(UTC)
    assert response.status_code == 200 and response.json()["frames"] == 120
    listed = stack.client.get("/api/v1/sessions", headers=auth(KEY_A)).json()["sessions"]
    expires_at = datetime.fromisoformat(
        next(s for s in listed if s["session_id"] == sid)["expires_at"]
    )
    ttl = timedelta(seconds=stack.settings["session_ttl_s"])
    assert expires_at >= ended + ttl - timedelta(seconds=1)  # restarted at the end, not the start
    time.sleep(2 * stack.settings["expiry_check_s"])  # expiry sweeps run meanwhile
    masks = stack.client.get(f"{base}/masks", headers=auth(KEY_A))
    assert masks.status_code == 200 and len(masks.json()["frames"]) == 120
    assert stack.client.delete(base, headers=auth(KEY_A)).status_code == 204


def test_an_upload_past_the_limit_is_refused_while_it_streams(stack):
    def body():  # chunked: no Content-Length, so the limit must hold while streaming
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
        for _ in range(200):
            yield b"\0" * 65536
        yield b"\r\n--xyz--\r\n"

    headers = {**auth(KEY_A), "content-type": "multipart/form-data; boundary=xyz"}
    response = stack.client.post("/api/v1/sessions", content=body(), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    uploads = Path(stack.settings["storage_root"]) / ".uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    declared = stack.client.post("/api/v1/sessions", headers=headers, content=b"\0" * 400_000)
    assert declared.status_code == 413  # refused on its Content-Length


def test_a_nul_character_in_a_server_side_path_is_422(stack):
    response = stack.client.post(
        "/api/v1/sessions", json={"video_path": "a\u0000b.mp4"}, headers=auth(KEY_A)
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"


def test_a_file_name_too_long_for_the_filesystem_is_404(stack):
    response = stack.client.post(
        "/api/v1/sessions", json={"video_path": "0" * 300}, headers=auth(KEY_A)
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_malformed_session_ids_are_refused_at_the_edge(stack):
    """ "<id>:log" and "<id>:objects" name the store's list and hash of a real session."""
    created = stack.client.post(
        "/api/v1/sessions", json={"video_path": "clip.mp4"}, headers=auth(KEY_A)
    )
    sid = created.json()["session_id"]
    click = {"frame_index": 0, "points": [[40, 60]]}
    assert stack.client.post(
        f"/api/v1/sessions/{sid}/prompts", json=click, headers=auth(KEY_A)
    ).is_success
    for bad in (f"{sid}:log", f"{sid}:objects", "x" * 65, "short"):
        response = stack.client.get(f"/api/v1/sessions/{bad}", headers=auth(KEY_A))
        assert response.status_code == 422, bad
        masks = stack.client.get(f"/api/v1/sessions/{bad}/masks", headers=auth(KEY_A))
        assert masks.status_code == 422, bad
    assert stack.client.delete(f"/api/v1/sessions/{sid}", headers=auth(KEY_A)).status_code == 204


def test_json_bodies_past_their_limit_are_413_before_parsing(stack):
    pad = "x" * (ServiceSettings().max_json_bytes + 1)  # the stack keeps the default
    routes = (
        "/api/v1/sessions",
        "/api/v1/sessions/abcdefgh12345678/prompts",
        "/api/v1/sessions/abcdefgh12345678/propagate",
    )
    for route in routes:
        body = json.dumps({"frame_index": 0, "points": [[1, 1]], "pad": pad})
        headers = {**auth(KEY_A), "content-type": "application/json"}
        declared = stack.client.post(route, content=body, headers=headers)
        streamed = stack.client.post(route, content=iter([body.encode()]), headers=headers)
        for response in (declared, streamed):
            assert response.status_code == 413, route
            assert response.json()["error"]["code"] == "body_too_large"


def test_images_past_their_limit_are_413(stack):
    image = b"\xff" * 100_001
    multipart = stack.client.post(
        "/api/v1/image/segment",
        files={"file": ("i.png", image)},
        data={"prompts": json.dumps({"points": [[1, 1]]})},
        headers=auth(KEY_A),
    )
    as_json = stack.client.post(
        "/api/v1/image/segment",
        json={"image": base64.b64encode(image * 40).decode(), "points": [[1, 1]]},
        headers=auth(KEY_A),
    )
    for response in (multipart, as_json):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"

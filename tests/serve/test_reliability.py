"""Sessions survive the death of their replica: the next request rebuilds the session on a live
replica from the shared storage and the store's prompt log; masks computed before are kept."""

from __future__ import annotations

import pytest
import ray

from tests.serve.conftest import deploy, stack_settings


@pytest.fixture(scope="module")
def stack(http_port, redis_server, tmp_path_factory):
    settings = stack_settings(tmp_path_factory.mktemp("sessions"), redis_url=redis_server.url)
    return deploy(http_port, "rely", settings)


def kill_replica(app: str, replica: str) -> None:
    actor = ray.get_actor(f"SERVE_REPLICA::{app}#SAM2Replica#{replica}", namespace="serve")
    ray.kill(actor, no_restart=True)


def masks_by_frame(stack, base: str) -> dict[int, list]:
    frames = stack.client.get(f"{base}/masks").json()["frames"]
    return {f["frame_index"]: f["masks"] for f in frames}


def test_killed_owner_next_click_rebuilds_elsewhere_and_keeps_masks(stack, video):
    session = stack.upload(video).json()
    sid, owner = session["session_id"], session["replica"]
    base = f"/api/v1/sessions/{sid}"
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "box": [100, 10, 150, 50]})
    stack.client.patch(f"{base}/objects/2", json={"name": "square"})
    assert stack.client.post(f"{base}/propagate", json={"direction": "forward"}).status_code == 200
    before = masks_by_frame(stack, base)

    kill_replica("rely", owner)
    click = stack.client.post(
        f"{base}/prompts", json={"frame_index": 9, "obj_id": 1, "points": [[90, 60]]}
    )
    assert click.status_code == 200, click.text
    after = stack.client.get(base).json()
    assert after["replica"] != owner and after["status"] == "ready"
    assert {o["obj_id"]: o["name"] for o in after["objects"]} == {1: None, 2: "square"}
    assert {o["obj_id"]: o["prompt_frames"] for o in after["objects"]} == {1: [0, 9], 2: [0]}
    now = masks_by_frame(stack, base)
    assert all(now[f] == before[f] for f in before if f != 9)  # propagated masks unchanged
    again = stack.client.post(f"{base}/propagate", json={"direction": "forward"})
    assert again.status_code == 200 and again.json()["frames"] == len(before)
    stack.client.delete(base)

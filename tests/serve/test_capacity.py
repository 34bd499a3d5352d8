"""Capacity over HTTP: one replica, autoscaling off, beyond its sessions -> 503 + Retry-After."""

from __future__ import annotations

from tests.serve.conftest import deploy, stack_settings


def test_session_beyond_capacity_gets_503_with_retry_after(http_port, video, tmp_path):
    settings = stack_settings(tmp_path, min_replicas=1, max_replicas=1, max_sessions=1)
    stack = deploy(http_port, "one", settings)
    first = stack.upload(video)
    assert first.status_code == 201, first.text
    refused = stack.upload(video)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "7"
    assert refused.json()["error"]["code"] == "no_capacity"
    stack.client.delete(f"/api/v1/sessions/{first.json()['session_id']}")
    assert stack.upload(video).status_code == 201


def test_a_session_whose_only_replica_died_is_rebuilt_on_its_replacement(
    http_port, video, tmp_path
):
    import ray

    settings = stack_settings(tmp_path, min_replicas=1, max_replicas=1, max_sessions=2)
    stack = deploy(http_port, "dies", settings)
    created = stack.upload(video).json()
    base = f"/api/v1/sessions/{created['session_id']}"
    first = stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    assert first.status_code == 200
    name = f"SERVE_REPLICA::dies#SAM2Replica#{created['replica']}"
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    click = stack.client.post(f"{base}/prompts", json={"frame_index": 2, "points": [[40, 60]]})
    assert click.status_code == 200, click.text  # waited for Serve's replacement replica
    session = stack.client.get(base).json()
    assert session["replica"] != created["replica"]
    assert session["objects"][0]["prompt_frames"] == [0] and len(session["objects"]) == 2

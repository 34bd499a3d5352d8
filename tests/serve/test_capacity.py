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


def test_request_for_a_session_whose_replica_died_gets_503(http_port, video, tmp_path):
    import ray

    settings = stack_settings(tmp_path, min_replicas=1, max_replicas=1, max_sessions=2)
    stack = deploy(http_port, "dies", settings)
    created = stack.upload(video).json()
    actor = ray.get_actor(
        f"SERVE_REPLICA::dies#SAM2Replica#{created['replica']}", namespace="serve"
    )
    ray.kill(actor, no_restart=True)
    click = stack.client.post(
        f"/api/v1/sessions/{created['session_id']}/prompts",
        json={"frame_index": 0, "points": [[40, 60]]},
    )
    assert click.status_code == 503
    assert click.json()["error"]["code"] == "session_unavailable"
    assert "Retry-After" in click.headers

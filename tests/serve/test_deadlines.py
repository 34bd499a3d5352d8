"""Time budgets: a request that runs past its budget gets 504 with the contract's error body."""

from __future__ import annotations

from tests.serve.conftest import deploy, stack_settings


def test_a_click_past_its_time_budget_gets_504(http_port, video, tmp_path):
    settings = stack_settings(
        tmp_path, min_replicas=1, max_replicas=1, max_sessions=1, request_timeout_s=0.01
    )
    stack = deploy(http_port, "budget", settings)
    created = stack.upload(video)  # uploads have their own, longer budget
    assert created.status_code == 201, created.text
    base = f"/api/v1/sessions/{created.json()['session_id']}"
    click = stack.client.post(f"{base}/prompts", json={"frame_index": 0, "points": [[40, 60]]})
    assert click.status_code == 504
    assert click.json()["error"]["code"] == "deadline_exceeded"

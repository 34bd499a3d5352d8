"""Autoscaling on active sessions: a session taking the last free slot brings up a replica,
so a spare slot is ready for the next user."""

from __future__ import annotations

import time

from deployments.autoscaling import replicas_for
from tests.serve.conftest import deploy, stack_settings


def test_policy_targets_sessions_plus_a_spare_slot():
    assert replicas_for(0, max_sessions=3, spare_slots=1) == 1
    assert replicas_for(3, max_sessions=3, spare_slots=1) == 2
    assert replicas_for(10, max_sessions=3, spare_slots=1) == 4
    assert replicas_for(7, max_sessions=3, spare_slots=0) == 3  # never fewer than sessions need


def test_a_full_replica_brings_up_another(http_port, video, tmp_path):
    settings = stack_settings(tmp_path, min_replicas=1, max_replicas=2, max_sessions=1)
    stack = deploy(http_port, "scaling", settings)
    assert stack.client.get("/health").json()["replicas"] == 1
    assert stack.upload(video).status_code == 201
    deadline = time.monotonic() + 120
    while stack.client.get("/health").json()["capacity"] < 2 and time.monotonic() < deadline:
        time.sleep(1)
    health = stack.client.get("/health").json()
    assert (health["replicas"], health["capacity"], health["active_sessions"]) == (2, 2, 1)
    second = stack.upload(video)
    assert second.status_code == 201, second.text

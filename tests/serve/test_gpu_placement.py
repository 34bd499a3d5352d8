"""Fractional GPUs: on a cluster with one (declared) GPU, three 0.33-GPU replicas start and a
fourth stays pending. The GPU is logical here; the model runs on the CPU."""

from __future__ import annotations

import time

import pytest
import ray
from ray import serve

from deployments.app import build_app
from tests.serve.conftest import stack_settings
from tests.servers import local_ray


@pytest.fixture
def one_gpu_cluster():
    with local_ray(num_cpus=2, num_gpus=1):
        yield
        serve.shutdown()


def replica_states(app: str) -> dict[str, int]:
    deployment = serve.status().applications[app].deployments["SAM2Replica"]
    return {str(state): count for state, count in deployment.replica_states.items()}


def test_three_third_gpu_replicas_start_and_a_fourth_pends(one_gpu_cluster, tmp_path):
    settings = stack_settings(tmp_path, min_replicas=4, max_replicas=4, replica_num_gpus=0.33)
    # serve.run would wait forever for the fourth replica: deploy without waiting.
    target = serve.RunTarget(build_app(settings), name="gpu", route_prefix="/gpu")
    serve.run_many([target], wait_for_applications_running=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = replica_states("gpu")
        if states.get("RUNNING") == 3:
            break
        time.sleep(1)
    time.sleep(5)  # the fourth keeps waiting for GPU
    states = replica_states("gpu")
    assert states.get("RUNNING") == 3, states
    assert sum(states.values()) == 4  # the fourth exists and is not running
    assert ray.available_resources().get("GPU", 0) < 0.33

"""ModelExecutor: one worker thread, round-robin between sessions, errors to the caller."""

from __future__ import annotations

import threading

import pytest
import torch

from deployments.engine.executor import ModelExecutor


@pytest.fixture
def executor():
    executor = ModelExecutor(torch.device("cpu"), torch.bfloat16)
    yield executor
    executor.close()


def test_sessions_are_served_round_robin(executor):
    gate = threading.Event()
    order: list[str] = []
    executor.submit("blocker", gate.wait)
    futures = [executor.submit("a", lambda i=i: order.append(f"a{i}")) for i in range(3)]
    futures += [executor.submit("b", lambda: order.append("b0"))]
    futures += [executor.submit("c", lambda i=i: order.append(f"c{i}")) for i in range(2)]
    gate.set()
    for future in futures:
        future.result()
    assert order == ["a0", "b0", "c0", "a1", "c1", "a2"]


def test_work_runs_on_one_thread_in_inference_mode_under_autocast(executor):
    seen = [
        executor.run(
            "s",
            lambda: (
                threading.get_ident(),
                torch.is_inference_mode_enabled(),
                torch.is_autocast_enabled("cpu"),
            ),
        )
        for _ in range(3)
    ]
    assert len({ident for ident, _, _ in seen}) == 1
    assert all(inference and autocast for _, inference, autocast in seen)


def test_errors_reach_the_caller_and_the_worker_goes_on(executor):
    with pytest.raises(ZeroDivisionError):
        executor.run("s", lambda: 1 / 0)
    assert executor.run("s", lambda: 42) == 42


def test_close_fails_queued_work(executor):
    gate = threading.Event()
    executor.submit("s", gate.wait)
    queued = executor.submit("s", lambda: None)
    closer = threading.Thread(target=executor.close)
    closer.start()
    gate.set()
    closer.join()
    with pytest.raises(RuntimeError, match="closed"):
        queued.result()

"""Fair sharing: a click on session B while A propagates waits for about one of A's frames."""

from __future__ import annotations

import itertools
import threading
import time

from deployments.protocol import Prompt, PropagationRequest
from tests.videos import write_video


def test_click_on_b_returns_while_a_propagates_within_two_of_its_frames(engine, tmp_path):
    video = write_video(tmp_path / "clip.mp4", num_frames=40)
    a = engine.session(engine.create_session(video).session_id)
    b = engine.session(engine.create_session(video).session_id)
    a.add_prompt(Prompt(frame_index=0, points=[(40, 60)]))
    events = a.propagate(PropagationRequest(direction="forward"))
    frame_times: list[float] = []
    finished = threading.Event()

    def consume() -> None:
        for event in events:
            if event.type == "frame":
                frame_times.append(time.perf_counter())
        finished.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    while len(frame_times) < 4:
        time.sleep(0.01)
    done_before = a.info().propagation.done_frames
    started = time.perf_counter()
    b.add_prompt(Prompt(frame_index=5, points=[(40, 60)]))
    latency = time.perf_counter() - started
    done_after = a.info().propagation.done_frames
    b_returned_before_a_finished = not finished.is_set()
    consumer.join()

    step = sorted(b - a for a, b in itertools.pairwise(frame_times))[len(frame_times) // 2]
    print(f"click latency {latency:.3f}s = {latency / step:.2f} propagation steps of {step:.3f}s")
    assert b_returned_before_a_finished
    assert done_after - done_before <= 2  # A advanced by at most two frames during B's click
    assert len(frame_times) == 40

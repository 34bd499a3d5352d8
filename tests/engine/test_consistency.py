"""Sessions used from several threads at once, as the replica's thread pool does: reads see the
session between two edits, a propagation's events close safely from any thread, and deleting a
session stops its propagation before its files go."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from deployments.protocol import (
    FrameMasks,
    NotFoundError,
    Prompt,
    PropagationRequest,
    SessionUnavailableError,
)

NUM_FRAMES = 24
CIRCLE = Prompt(frame_index=0, obj_id=1, points=[(32, 60)])
SQUARE = Prompt(frame_index=0, obj_id=2, box=(100, 2, 150, 40))


@pytest.fixture
def session(engine, video):
    session = engine.session(engine.create_session(video).session_id)
    session.add_prompt(CIRCLE)
    return session


def test_reads_during_edits_see_the_session_between_two_edits(session):
    def edit() -> None:
        for _ in range(4):
            session.add_prompt(SQUARE)
            session.remove_object(2)

    seen = set()
    with ThreadPoolExecutor(1) as pool:
        edits = pool.submit(edit)
        while not edits.done():
            for objects in (session.objects(), session.info().objects):
                seen.add(tuple((o.obj_id, tuple(o.prompt_frames)) for o in objects))
        edits.result()
    assert seen <= {((1, (0,)),), ((1, (0,)), (2, (0,)))}


def test_reads_during_a_propagation_never_raise(session):
    session.add_prompt(SQUARE)
    events = session.propagate(PropagationRequest(direction="forward", max_frames=7))
    with ThreadPoolExecutor(1) as pool:
        consumed = pool.submit(list, events)
        while not consumed.done():
            info = session.info()
            assert [(o.obj_id, o.prompt_frames) for o in info.objects] == [(1, [0]), (2, [0])]
            assert info.status == "ready" or info.propagation.done_frames <= 8
        assert len(consumed.result()) == 8 + 1
    assert session.info().status == "ready"


def test_closing_the_events_while_a_frame_is_computed_waits_for_that_frame(session, monkeypatch):
    events = session.propagate(PropagationRequest(direction="forward"))
    inside, go_on = threading.Event(), threading.Event()
    record = session._record

    def slow_record(result, plan):
        inside.set()
        go_on.wait()
        return record(result, plan)

    monkeypatch.setattr(session, "_record", slow_record)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(next, events)
        assert inside.wait(120), first.exception(timeout=1)  # fails instead of hanging
        closed = pool.submit(events.close)  # as the replica does when its client goes away
        waited = not closed.done()  # for the frame in flight
        go_on.set()
        frame = first.result()
        closed.result()
    assert waited
    assert isinstance(frame, FrameMasks) and frame.frame_index == 0
    assert session.masks.frame(0) == frame.masks
    assert session.info().status == "ready"
    assert next(events, None) is None


def test_deleting_a_session_mid_propagation_stops_it_and_leaves_no_files(engine, session):
    events = session.propagate(PropagationRequest(direction="forward"))
    first_frame = threading.Event()
    seen = []

    def consume() -> None:
        for event in events:
            seen.append(event)
            first_frame.set()

    with ThreadPoolExecutor(1) as pool:
        consumed = pool.submit(consume)
        first_frame.wait()
        engine.delete_session(session.id)
        consumed.result()  # ended without an error
    assert not session.directory.exists()
    assert len(seen) < NUM_FRAMES
    with pytest.raises(NotFoundError):
        engine.session(session.id)
    with pytest.raises(SessionUnavailableError):
        session.add_prompt(CIRCLE)

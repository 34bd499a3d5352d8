"""Propagation on the real SAM 2 model: directions, start frames, objects, refinement, cancel."""

from __future__ import annotations

import threading

import pytest

from deployments.protocol import (
    ConflictError,
    FrameMasks,
    FrameOutOfRangeError,
    InvalidRequestError,
    NotFoundError,
    Prompt,
    PropagationDone,
    PropagationRequest,
)
from tests.videos import circle_at

NUM_FRAMES = 24


@pytest.fixture
def session(engine, video):
    return engine.session(engine.create_session(video).session_id)


def click(session, frame: int, obj_id: int = 1, label: int = 1):
    x, y = circle_at(frame, NUM_FRAMES, (160, 120))
    return session.add_prompt(
        Prompt(frame_index=frame, obj_id=obj_id, points=[(x, y)], labels=[label])
    )


def run(session, **request) -> tuple[list[FrameMasks], PropagationDone]:
    *frames, done = session.propagate(PropagationRequest(**request))
    assert isinstance(done, PropagationDone)
    assert all(isinstance(f, FrameMasks) for f in frames)
    return frames, done


def frame_order(frames: list[FrameMasks]) -> list[int]:
    return [f.frame_index for f in frames]


def test_forward_from_the_prompted_frame_to_the_end(session):
    click(session, 0)
    frames, done = run(session, direction="forward")
    assert frame_order(frames) == list(range(NUM_FRAMES))
    assert (done.frames, done.cancelled) == (NUM_FRAMES, False)
    assert [f.frame_index for f in session.masks.frames()] == list(range(NUM_FRAMES))


def test_backward_from_the_prompted_frame_to_the_start(session):
    click(session, 10)
    frames, _ = run(session, direction="backward")
    assert frame_order(frames) == list(range(10, -1, -1))


def test_both_ways_from_a_middle_frame_reports_each_frame_once(session):
    click(session, 12)
    frames, done = run(session, direction="both")
    assert frame_order(frames) == [*range(12, NUM_FRAMES), *range(11, -1, -1)]
    assert done.frames == NUM_FRAMES


def test_explicit_start_frame_and_max_frames(session):
    click(session, 5)
    frames, _ = run(session, direction="both", start_frame_index=8, max_frames=3)
    assert frame_order(frames) == [8, 9, 10, 11, 7, 6, 5]


def test_backward_from_frame_zero_is_empty(session):
    click(session, 0)
    frames, done = run(session, direction="backward")
    assert frames == [] and done.frames == 0


def test_every_frame_event_holds_every_object(session):
    click(session, 0, obj_id=1)
    session.add_prompt(Prompt(frame_index=0, obj_id=2, box=(100, 2, 150, 40)))
    frames, _ = run(session, direction="forward", max_frames=4)
    assert all([m.obj_id for m in f.masks] == [1, 2] for f in frames)


def test_object_added_after_a_propagation_is_tracked_on_its_own(session):
    click(session, 0, obj_id=1)
    run(session, direction="forward")
    before = {f.frame_index: f.masks for f in session.masks.frames()}
    session.add_prompt(Prompt(frame_index=6, obj_id=2, box=(100, 10, 150, 50)))
    frames, _ = run(session, direction="both", obj_ids=[2])
    assert sorted(frame_order(frames)) == list(range(NUM_FRAMES))
    after = {f.frame_index: f.masks for f in session.masks.frames()}
    for frame, masks in after.items():
        assert [m.obj_id for m in masks] == [1, 2]
        assert masks[0] == before[frame][0]  # object 1 untouched by object 2's propagation


def test_refinement_click_changes_later_frames_after_repropagation(session):
    click(session, 0)
    run(session, direction="forward")
    before = {f.frame_index: f.masks[0].rle for f in session.masks.frames()}
    session.add_prompt(Prompt(frame_index=12, obj_id=1, points=[(150, 110)], labels=[0]))
    assert session.objects()[0].prompt_frames == [0, 12]
    run(session, direction="forward")
    after = {f.frame_index: f.masks[0].rle for f in session.masks.frames()}
    assert any(after[f] != before[f] for f in range(13, NUM_FRAMES))


def test_subset_of_objects_and_unknown_objects(session):
    click(session, 0, obj_id=1)
    click(session, 0, obj_id=2)
    frames, _ = run(session, direction="forward", max_frames=2, obj_ids=[2])
    assert frame_order(frames) == [0, 1, 2]
    with pytest.raises(NotFoundError):
        session.propagate(PropagationRequest(obj_ids=[9]))


def test_nothing_to_propagate(session):
    with pytest.raises(InvalidRequestError, match="add a prompt"):
        session.propagate(PropagationRequest())


def test_start_frame_out_of_range(session):
    click(session, 0)
    with pytest.raises(FrameOutOfRangeError):
        session.propagate(PropagationRequest(start_frame_index=NUM_FRAMES))


def test_second_propagation_on_a_session_is_a_conflict(session):
    click(session, 0)
    first = session.propagate(PropagationRequest(direction="forward"))
    with pytest.raises(ConflictError):
        session.propagate(PropagationRequest(direction="forward"))
    assert session.info().status == "propagating"
    first.close()
    assert session.info().status == "ready"


def test_cancel_stops_after_the_current_frame(session):
    click(session, 0)
    events = session.propagate(PropagationRequest(direction="both"))
    seen = [next(events), next(events)]
    assert session.cancel_propagation() is True
    *rest, done = list(events)
    assert done.cancelled is True
    assert len(seen) + len(rest) == done.frames <= 3
    assert session.cancel_propagation() is False
    # every frame computed before the cancel was stored
    assert len(list(session.masks.frames())) >= done.frames


def test_cancel_from_another_thread_while_streaming(session):
    click(session, 0)
    events = session.propagate(PropagationRequest(direction="forward"))
    first = next(events)
    threading.Thread(target=session.cancel_propagation).start()
    *_, done = [first, *events]
    assert done.cancelled and done.frames < NUM_FRAMES


def test_progress_is_reported_while_propagating(session):
    click(session, 0)
    events = session.propagate(PropagationRequest(direction="forward"))
    next(events)
    next(events)
    progress = session.info().propagation
    assert (progress.direction, progress.done_frames, progress.total_frames) == (
        "forward",
        2,
        NUM_FRAMES,
    )
    events.close()
    assert session.info().propagation is None


def test_masks_say_whether_a_prompt_or_which_propagation_made_them(session):
    click(session, 0)
    assert [(m.source, m.propagation_id) for m in session.masks.frame(0)] == [("prompt", None)]
    run(session, direction="forward", max_frames=3)
    click(session, 2)
    run(session, direction="forward", start_frame_index=2, max_frames=5)
    sources = {
        f.frame_index: (f.masks[0].source, f.masks[0].propagation_id)
        for f in session.masks.frames()
    }
    assert sources[0] == sources[2] == ("prompt", None)  # prompted frames keep their prompt
    assert sources[1] == ("propagation", 1)  # the second one started at frame 2
    assert {sources[f] for f in range(3, 8)} == {("propagation", 2)}


def test_an_objects_timeline_without_its_masks(session):
    click(session, 4, obj_id=1)
    click(session, 10, obj_id=2)
    run(session, direction="forward", obj_ids=[1], max_frames=6)
    timeline = session.timeline(1, score_threshold=1.0, iou_threshold=0.0)
    masked = [f.frame_index for f in session.masks.frames(obj_id=1) if f.masks[0].area > 0]
    assert [f for first, last in timeline.ranges for f in range(first, last + 1)] == masked
    assert timeline.prompt_frames == [4]
    everyone = session.review(score_threshold=1.0, iou_threshold=0.0)
    assert [(m.frame_index, m.reason, m.value) for m in timeline.review] == [
        (i.frame_index, i.reason, i.value) for i in everyone if i.obj_id == 1
    ]
    other = session.timeline(2, 0.5, 0.5)
    assert other.prompt_frames == [10] and other.ranges in ([(10, 10)], [])
    with pytest.raises(NotFoundError):
        session.timeline(9, 0.5, 0.5)

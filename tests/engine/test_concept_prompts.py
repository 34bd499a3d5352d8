"""Text prompts and re-detection on the real SAM 2 model (random weights): given the instances a
detector found (synthetic here: the shapes drawn on the test clip; SAM 3 is tested in
tests/detector), the session matches them against its objects and makes the rest objects
through the mask-prompt path."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
import torch

from deployments.engine import SessionEngine
from deployments.engine.concepts import match, object_names
from deployments.engine.mask_store import encode_masks
from deployments.protocol import (
    RLE,
    FrameMasks,
    InvalidPromptError,
    InvalidRequestError,
    Prompt,
    PropagationDone,
    PropagationRequest,
)
from deployments.protocol.concepts import (
    ConceptQuery,
    DetectedInstance,
    ObjectAdded,
    Redetect,
    TextPrompt,
)
from tests.conftest import engine_settings
from tests.engine.test_rebuild import Twin, prompt_outputs

NUM_FRAMES, WIDTH, HEIGHT = 24, 160, 120  # the `video` fixture


def circle(frame: int) -> np.ndarray:
    """The circle ``write_video`` draws on a frame, as a bool mask."""
    cx = int(WIDTH * 0.2 + WIDTH * 0.6 * frame / (NUM_FRAMES - 1))
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    return (xs - cx) ** 2 + (ys - HEIGHT // 2) ** 2 <= (HEIGHT // 8) ** 2


def square(frame: int) -> np.ndarray:
    top = int(HEIGHT * 0.1 + HEIGHT * 0.5 * frame / (NUM_FRAMES - 1))
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top : top + 26, WIDTH - 50 : WIDTH - 19] = True
    return mask


def corner() -> np.ndarray:
    """A blob where nothing is drawn: an instance no tracked object overlaps."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[95:115, 5:30] = True
    return mask


def rle(mask: np.ndarray) -> RLE:
    return encode_masks([0], mask[None], [1.0])[0].rle


def instance(mask: np.ndarray | RLE, score: float = 0.9) -> DetectedInstance:
    encoded = mask if isinstance(mask, RLE) else rle(mask)
    return DetectedInstance(rle=encoded, box=(0, 0, 1, 1), score=score)


def text(frame: int, what: str = "shape") -> TextPrompt:
    return TextPrompt(frame_index=frame, query=ConceptQuery(text=what))


@pytest.fixture
def logged(engine, video) -> tuple[Any, list[dict[str, Any]]]:
    """A persisted session and the prompt log its journal wrote."""
    session = engine.session(engine.create_session(video).session_id)
    log: list[dict[str, Any]] = []
    session.persist(log.append)
    return session, log


def test_a_text_prompt_makes_each_instance_an_object_as_its_mask_prompt_would(
    engine, video, logged
):
    session, log = logged
    found = [instance(square(3), 0.6), instance(circle(3), 0.8)]
    result = session.add_text_prompt(text(3, " shape "), found)
    assert [
        (o.obj_id, o.name, o.category, o.detector_score, o.matched) for o in result.objects
    ] == [
        (1, "shape 1", "shape", 0.8, False),  # in descending score
        (2, "shape 2", "shape", 0.6, False),
    ]
    assert result.exact and [(o.name, o.category) for o in session.objects()] == [
        ("shape 1", "shape"),
        ("shape 2", "shape"),
    ]
    plain = engine.session(engine.create_session(video).session_id)
    plain.add_prompt(Prompt(frame_index=3, obj_id=1, mask=rle(circle(3))))
    expected = plain.add_prompt(Prompt(frame_index=3, obj_id=2, mask=rle(square(3)))).masks
    assert [(m.obj_id, m.rle, m.source) for m in result.masks] == [
        (m.obj_id, m.rle, m.source) for m in expected
    ]
    [entry] = log
    assert entry["op"] == "text_prompt" and entry["text"] == "shape"
    assert [o["prompt"]["obj_id"] for o in entry["objects"]] == [1, 2]


def test_a_repeated_text_prompt_matches_the_objects_instead_of_duplicating_them(logged):
    session, log = logged
    session.add_prompt(Prompt(frame_index=2, points=[(20, 20)]))  # obj 1, no category
    session.add_text_prompt(text(2), [instance(circle(2)), instance(square(2))])
    again = session.add_text_prompt(text(2), [instance(square(2)), instance(circle(2))])
    assert [(o.obj_id, o.name, o.matched) for o in again.objects] == [
        (3, "shape 2", True),
        (2, "shape 1", True),
    ]
    assert len(log) == 2  # a match changes nothing, so nothing is logged
    list(
        session.propagate(
            PropagationRequest(direction="forward", start_frame_index=2, max_frames=3)
        )
    )
    # On a frame the objects were tracked to: their masks there are what the detector finds
    # again; one more instance, and the same text's objects hold only for that category.
    on_5 = {m.obj_id: m.rle for m in session.masks.frame(5)}
    found = [instance(on_5[2]), instance(on_5[3]), instance(corner(), 0.5)]
    later = session.add_text_prompt(text(5), found)
    assert [(o.obj_id, o.name, o.matched) for o in later.objects] == [
        (2, "shape 1", True),
        (3, "shape 2", True),
        (4, "shape 3", False),
    ]
    other = session.add_text_prompt(text(5, "tool"), [instance(on_5[2])])
    assert [(o.obj_id, o.name, o.category, o.matched) for o in other.objects] == [
        (5, "tool 1", "tool", False)
    ]


def test_a_text_prompt_past_the_object_limit_adds_nothing(tmp_path, predictor, video):
    engine = SessionEngine(engine_settings(tmp_path, max_objects=2), predictor=predictor)
    try:
        session = engine.session(engine.create_session(video).session_id)
        log: list[dict[str, Any]] = []
        session.persist(log.append)
        session.add_prompt(Prompt(frame_index=4, points=[(20, 20)]))
        before = session.masks.frame(4)
        with pytest.raises(InvalidPromptError, match="at most 2 objects") as raised:
            session.add_text_prompt(text(4), [instance(circle(4)), instance(square(4))])
        assert raised.value.details["new_instances"] == 2
        assert [o.obj_id for o in session.objects()] == [1]
        assert session._state["obj_ids"] == [1] and session.masks.frame(4) == before
        assert [e["op"] for e in log] == ["prompt"]
    finally:
        engine.close()


def test_a_text_prompt_with_no_instances_answers_the_frame_as_it_is(logged):
    session, log = logged
    clicked = session.add_prompt(Prompt(frame_index=1, points=[(20, 20)]))
    result = session.add_text_prompt(text(1), [])
    assert (result.objects, result.masks, result.exact) == ([], clicked.masks, True)
    assert len(log) == 1


def test_an_instance_not_of_the_frame_size_is_refused_before_anything_is_added(logged):
    session, _ = logged
    small = np.zeros((60, 80), bool)
    with pytest.raises(InvalidPromptError, match="frame size"):
        session.add_text_prompt(text(0), [instance(circle(0)), instance(small)])
    assert session.objects() == []


@pytest.fixture
def twins(tmp_path, predictor, video):
    pair = [Twin(tmp_path / name, predictor, video) for name in ("live", "rebuilt")]
    yield pair
    for twin in pair:
        twin.engine.close()


def test_a_text_prompt_replays_from_the_log_without_the_detector(twins):
    """The rebuilt twin's replica died after logging the text prompt, before checkpointing:
    the rebuild applies the logged mask prompts to the earlier checkpoint. Both then
    propagate alike and hold the same prompt outputs."""
    live, rebuilt = twins
    snapshot = rebuilt.root / "checkpoint-before"
    for twin in twins:
        twin.session.add_prompt(Prompt(frame_index=0, points=[(30, 60)]))
        if twin is rebuilt:
            shutil.copytree(twin.session.directory / "sam2_state", snapshot)
        twin.session.add_text_prompt(text(6), [instance(circle(6)), instance(square(6))])
    checkpoint = rebuilt.session.directory / "sam2_state"
    shutil.rmtree(checkpoint)
    shutil.copytree(snapshot, checkpoint)
    rebuilt.rebuild()  # no names from the session store: the log's
    assert rebuilt.session.objects() == live.session.objects()
    request = PropagationRequest(direction="forward", start_frame_index=6, max_frames=2)
    walks = [list(twin.session.propagate(request)) for twin in twins]
    assert walks[0][:-1] == walks[1][:-1] and len(walks[0]) == 4
    expected, got = prompt_outputs(live.session), prompt_outputs(rebuilt.session)
    assert expected.keys() == got.keys() and {key[0] for key in expected} == {1, 2, 3}
    assert all(torch.equal(tensor, got[key]) for key, tensor in expected.items())
    assert [o.name for o in rebuilt.session.objects()] == [None, "shape 1", "shape 2"]


class Detector:
    """Synthetic instances by frame; records what it was asked."""

    def __init__(self, found: dict[int, list[DetectedInstance]]) -> None:
        self.found, self.calls = found, []

    def __call__(self, frame: int, rgb: np.ndarray) -> list[DetectedInstance]:
        self.calls.append((frame, rgb.shape))
        return self.found.get(frame, [])


def test_redetection_adds_objects_where_they_appear_before_that_frame(logged):
    """Frame 0 finds the clicked object again (matched); frame 8 a new one (the walk restarts
    there with both); frame 12, the walk's last, another (the prompt's mask is the frame's)."""
    session, log = logged
    clicked = session.add_prompt(Prompt(frame_index=0, points=[(32, 60)]))
    detector = Detector(
        {
            0: [instance(clicked.masks[0].rle)],
            8: [instance(square(8), 0.7)],
            12: [instance(corner(), 0.6)],
        }
    )
    request = PropagationRequest(
        direction="forward",
        start_frame_index=0,
        max_frames=12,
        redetect=Redetect(text="shape", every_n_frames=4),
    )
    events = list(session.propagate(request, detector))
    assert detector.calls == [(f, (HEIGHT, WIDTH, 3)) for f in (0, 4, 8, 12)]
    kinds = [
        (type(e).__name__, e.frame_index if not isinstance(e, PropagationDone) else None)
        for e in events
    ]
    assert kinds == [
        *[("FrameMasks", f) for f in range(8)],
        ("ObjectAdded", 8),
        *[("FrameMasks", f) for f in range(8, 12)],
        ("ObjectAdded", 12),
        ("FrameMasks", 12),
        ("PropagationDone", None),
    ]
    added = [e for e in events if isinstance(e, ObjectAdded)]
    assert [(e.obj_id, e.name, e.category, e.detector_score) for e in added] == [
        (2, "shape 1", "shape", 0.7),
        (3, "shape 2", "shape", 0.6),
    ]
    frames = {e.frame_index: e for e in events if isinstance(e, FrameMasks)}
    assert [m.obj_id for m in frames[7].masks] == [1]
    assert [(m.obj_id, m.source) for m in frames[8].masks] == [(1, "propagation"), (2, "prompt")]
    assert [m.obj_id for m in frames[11].masks] == [1, 2]
    assert [(m.obj_id, m.source) for m in frames[12].masks][-1] == (3, "prompt")
    assert events[-1].frames == 13
    assert [e["op"] for e in log] == ["prompt", "text_prompt", "text_prompt"]
    assert [o.prompt_frames for o in session.objects()] == [[0], [8], [12]]


def test_redetection_stops_at_the_object_limit_and_later_passes_track_what_it_added(
    tmp_path, predictor, video
):
    engine = SessionEngine(engine_settings(tmp_path, max_objects=2), predictor=predictor)
    try:
        session = engine.session(engine.create_session(video).session_id)
        session.add_prompt(Prompt(frame_index=2, points=[(45, 60)]))
        detector = Detector({4: [instance(square(4), 0.5), instance(corner(), 0.9)]})
        request = PropagationRequest(
            direction="both",
            start_frame_index=2,
            max_frames=2,
            redetect=Redetect(text="shape", every_n_frames=2),
        )
        events = list(session.propagate(request, detector))
        assert [frame for frame, _ in detector.calls] == [2, 4, 0]
        added = [(e.obj_id, e.detector_score) for e in events if isinstance(e, ObjectAdded)]
        assert added == [(2, 0.9)] and session._state["obj_ids"] == [1, 2]  # the higher score
        frames = [
            (e.frame_index, [m.obj_id for m in e.masks])
            for e in events
            if isinstance(e, FrameMasks)
        ]
        assert [f for f in frames if f[0] in (0, 1, 3)] == [(3, [1]), (1, [1, 2]), (0, [1, 2])]
        with pytest.raises(InvalidRequestError, match="detector"):
            session.propagate(request)
    finally:
        engine.close()


def test_matching_is_one_to_one_by_highest_iou():
    wide, narrow = np.zeros((HEIGHT, WIDTH), bool), np.zeros((HEIGHT, WIDTH), bool)
    wide[10:50, 10:50], narrow[10:50, 10:40] = True, True
    objects = {7: rle(wide)}
    # Both overlap object 7 enough; the closer one takes it, the other stays unmatched.
    assert match([rle(narrow), rle(wide)], objects, 0.5) == {1: 7}
    assert match([rle(narrow)], objects, 0.8) == {}
    assert match([], objects, 0.5) == match([rle(wide)], {}, 0.5) == {}


def test_rebuilt_names_are_the_logs_unless_the_session_store_has_one():
    log = [
        {"op": "text_prompt", "objects": [_named(1, "shape 1"), _named(2, "shape 2")]},
        {"op": "remove_object", "obj_id": 2},
        {"op": "text_prompt", "objects": [_named(3, "shape 3")]},
    ]
    stored = {1: ("grasper", None), 3: (None, None), 4: ("clicked", "tool")}
    named = {o: (m.name, m.category) for o, m in object_names(log, stored).items()}
    assert named == {1: ("grasper", "shape"), 3: ("shape 3", "shape"), 4: ("clicked", "tool")}
    assert object_names([*log, {"op": "reset"}], {}) == {}


def _named(obj_id: int, name: str) -> dict[str, Any]:
    return {"prompt": {"obj_id": obj_id}, "name": name, "category": "shape"}

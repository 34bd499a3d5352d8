"""Prompts on the real SAM 2 model (random weights): every prompt type, objects, clearing."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from deployments.engine.mask_store import decode_mask
from deployments.protocol import (
    RLE,
    ConflictError,
    FrameOutOfRangeError,
    InvalidPromptError,
    NotFoundError,
    Prompt,
    PropagationRequest,
)


@pytest.fixture
def session(engine, video):
    return engine.session(engine.create_session(video).session_id)


def rle_of(mask: np.ndarray) -> RLE:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return RLE(size=rle["size"], counts=rle["counts"].decode())


def test_click_returns_a_consistent_frame_mask(session):
    result = session.add_prompt(Prompt(frame_index=3, points=[(40, 60)], labels=[1]))
    assert (result.frame_index, result.obj_id) == (3, 1)
    [mask] = result.masks
    decoded = decode_mask(mask.rle)
    assert decoded.shape == (120, 160)
    assert mask.area == int(decoded.sum())
    assert 0.0 <= mask.score <= 1.0
    if mask.area:
        ys, xs = np.nonzero(decoded)
        assert mask.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_positive_and_negative_points_accumulate_on_a_frame(session):
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(100, 20)], labels=[0]))
    assert session.info().objects[0].prompt_frames == [0]
    point_inputs = session._state["point_inputs_per_obj"][0][0]
    assert point_inputs["point_labels"].tolist() == [[1, 0]]


def test_box_prompt(session):
    result = session.add_prompt(Prompt(frame_index=5, box=(100, 10, 140, 40)))
    assert [m.obj_id for m in result.masks] == [1]


def test_box_and_points_together(session):
    result = session.add_prompt(
        Prompt(frame_index=5, box=(100, 10, 140, 40), points=[(120, 25)], labels=[1])
    )
    assert result.masks[0].obj_id == 1


def test_mask_prompt(session):
    mask = np.zeros((120, 160), bool)
    mask[40:80, 20:60] = True
    result = session.add_prompt(Prompt(frame_index=2, mask=rle_of(mask)))
    assert result.masks[0].rle.size == (120, 160)
    assert session.info().objects[0].prompt_frames == [2]


def test_normalized_coordinates_are_scaled_to_the_frame(session):
    session.add_prompt(Prompt(frame_index=0, points=[(0.25, 0.5)], normalized=True))
    stored = session._state["point_inputs_per_obj"][0][0]["point_coords"]
    size = session._predictor.image_size  # SAM 2 keeps points scaled to its input size
    assert stored[0, 0].tolist() == pytest.approx([0.25 * size, 0.5 * size])


def test_omitted_obj_id_creates_the_next_object(session):
    assert session.add_prompt(Prompt(frame_index=0, points=[(40, 60)])).obj_id == 1
    assert session.add_prompt(Prompt(frame_index=0, points=[(120, 20)])).obj_id == 2
    result = session.add_prompt(Prompt(frame_index=0, obj_id=7, points=[(60, 60)]))
    assert [m.obj_id for m in result.masks] == [1, 2, 7]
    assert session.add_prompt(Prompt(frame_index=0, points=[(10, 10)])).obj_id == 8


def test_frame_out_of_range_is_refused(session):
    with pytest.raises(FrameOutOfRangeError):
        session.add_prompt(Prompt(frame_index=24, points=[(40, 60)]))


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(frame_index=0, points=[(161, 60)]),
        Prompt(frame_index=0, points=[(10, -1)]),
        Prompt(frame_index=0, points=[(1.5, 0.5)], normalized=True),
        Prompt(frame_index=0, box=(10, 10, 200, 40)),
    ],
)
def test_points_and_boxes_outside_the_frame_are_refused(session, prompt):
    with pytest.raises(InvalidPromptError, match="outside the 160x120 frame"):
        session.add_prompt(prompt)
    assert session.info().objects == []


def test_mask_of_the_wrong_size_is_refused(session):
    with pytest.raises(InvalidPromptError, match="mask size"):
        session.add_prompt(Prompt(frame_index=0, mask=rle_of(np.ones((10, 10), bool))))


@pytest.mark.parametrize(
    "fields",
    [
        {"frame_index": 0},
        {"frame_index": 0, "points": [(1, 1)], "labels": [1, 0]},
        {"frame_index": 0, "box": (50, 10, 40, 40)},
        {"frame_index": 0, "points": [(1, 1)], "obj_id": 0},
        {"frame_index": 0, "points": [(1, 1)], "labels": [2]},
    ],
)
def test_malformed_prompts_fail_validation(fields):
    with pytest.raises(ValueError):
        Prompt(**fields)


def test_object_limit(engine, video):
    engine.settings.max_objects = 2
    session = engine.session(engine.create_session(video).session_id)
    session.add_prompt(Prompt(frame_index=0, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=0, points=[(120, 20)]))
    with pytest.raises(InvalidPromptError, match="at most 2 objects"):
        session.add_prompt(Prompt(frame_index=0, points=[(60, 60)]))


def test_clear_one_object_on_a_frame_keeps_the_others(session):
    session.add_prompt(Prompt(frame_index=4, obj_id=1, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=4, obj_id=2, points=[(120, 20)]))
    result = session.clear_prompts(4, obj_id=1)
    assert [m.obj_id for m in result.masks] == [2]
    objects = {o.obj_id: o for o in session.objects()}
    assert objects[1].prompt_frames == [] and objects[2].prompt_frames == [4]


def test_clear_all_objects_on_a_frame(session):
    session.add_prompt(Prompt(frame_index=4, obj_id=1, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=4, obj_id=2, points=[(120, 20)]))
    session.add_prompt(Prompt(frame_index=9, obj_id=2, points=[(120, 50)]))
    assert session.clear_prompts(4).masks == []
    assert {o.obj_id: o.prompt_frames for o in session.objects()} == {1: [], 2: [9]}


def test_clear_unknown_object_is_not_found(session):
    with pytest.raises(NotFoundError):
        session.clear_prompts(0, obj_id=3)


def test_remove_object_drops_its_prompts_and_masks(session):
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=0, obj_id=2, points=[(120, 20)]))
    list(session.propagate(PropagationRequest(direction="forward", max_frames=3)))
    session.remove_object(1)
    assert [o.obj_id for o in session.objects()] == [2]
    assert all(m.obj_id == 2 for f in session.masks.frames() for m in f.masks)
    with pytest.raises(NotFoundError):
        session.remove_object(1)


def test_remove_last_object_then_prompt_again(session):
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(40, 60)]))
    session.remove_object(1)
    assert session.objects() == []
    assert session.add_prompt(Prompt(frame_index=2, points=[(40, 60)])).obj_id == 1


def test_reset_forgets_objects_prompts_and_masks(session):
    session.add_prompt(Prompt(frame_index=0, points=[(40, 60)]))
    list(session.propagate(PropagationRequest(direction="forward", max_frames=2)))
    info = session.reset()
    assert info.objects == []
    assert list(session.masks.frames()) == []
    assert session.add_prompt(Prompt(frame_index=1, points=[(40, 60)])).obj_id == 1


def test_name_and_category_of_an_object(session):
    session.add_prompt(Prompt(frame_index=0, points=[(40, 60)]))
    info = session.update_object(1, name="grasper", category="instrument")
    assert (info.name, info.category, info.prompt_frames) == ("grasper", "instrument", [0])


def test_prompt_while_propagating_is_a_conflict(session):
    session.add_prompt(Prompt(frame_index=0, points=[(40, 60)]))
    events = session.propagate(PropagationRequest(direction="forward"))
    next(events)
    with pytest.raises(ConflictError):
        session.add_prompt(Prompt(frame_index=5, points=[(40, 60)]))
    events.close()
    session.add_prompt(Prompt(frame_index=5, points=[(40, 60)]))

"""Fidelity of concept-created objects to stock SAM 2 (``tests.fidelity.concepts``): a text
prompt's objects are stock's given the same mask prompts, and a re-detecting propagation is
stock's "propagate to the frame, add the masks there, propagate from the frame", bit for bit,
with the pins of tests/engine/test_fidelity.py (one torch thread, float32, encoder batches of
one)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from deployments.engine import SessionEngine
from deployments.engine.models import load_predictor
from deployments.engine.precision import resolve_compute_dtype
from deployments.protocol import Prompt, PropagationRequest
from deployments.protocol.concepts import ObjectAdded, Redetect
from tests.conftest import engine_settings
from tests.engine.test_concept_prompts import Detector, circle, corner, instance, square, text
from tests.engine.test_fidelity import PINNED
from tests.fidelity.concepts import apply_redetecting_propagation, apply_text_prompt
from tests.fidelity.oracle import Differential, build_stock


@pytest.fixture(scope="module")
def stock_and_engine(request, tmp_path_factory):
    """Stock SAM 2 and an engine with the pinned settings, on the same float32 weights."""
    if resolve_compute_dtype("auto", torch.device("cpu")) == torch.float32:
        predictor = request.getfixturevalue("predictor")
    else:
        settings = engine_settings(tmp_path_factory.mktemp("unused"), compute_dtype="float32")
        predictor = load_predictor(settings)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("concept-fidelity")
    engine = SessionEngine(engine_settings(root, **PINNED), predictor=predictor)
    yield build_stock(predictor), engine
    engine.close()
    torch.set_num_threads(previous)


@pytest.fixture
def diff(stock_and_engine, video) -> tuple[Differential, list[dict[str, Any]]]:
    """A new session and its oracle, with the session's prompt log."""
    stock, engine = stock_and_engine
    session = engine.session(engine.create_session(video).session_id)
    log: list[dict[str, Any]] = []
    session.persist(log.append)
    yield Differential(session, stock), log
    engine.delete_session(session.id)


def test_text_prompt_objects_are_stock_sam2_given_their_mask_prompts(diff):
    diff, log = diff
    diff.apply(Prompt(frame_index=2, obj_id=1, points=[(30, 30)]))
    result = apply_text_prompt(
        diff, log, text(2), [instance(circle(2), 0.8), instance(square(2), 0.7)]
    )
    assert [o.obj_id for o in result.objects if not o.matched] == [2, 3]
    diff.apply(PropagationRequest(direction="forward", start_frame_index=2, max_frames=5))
    diff.apply(Prompt(frame_index=5, obj_id=3, points=[(100, 100)], labels=[0]))
    diff.apply(PropagationRequest(direction="backward", start_frame_index=5, max_frames=4))
    diff.assert_faithful()
    assert sum(len(step.comparisons) for step in diff.steps) >= 2 + 3 * 6


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_redetected_objects_are_stock_sam2_adding_their_masks_where_they_were_found(
    diff, direction
):
    """Found on frame 4 of the walk (restarted there) and on its last frame, 8 (the prompt's
    mask); then corrected and propagated like any object."""
    diff, log = diff
    start, sign = (2, 1) if direction == "forward" else (10, -1)
    diff.apply(Prompt(frame_index=start, obj_id=1, points=[(30, 60)]))
    detector = Detector(
        {
            start + 4 * sign: [instance(square(start + 4 * sign))],
            start + 8 * sign: [instance(corner())],
        }
    )
    request = PropagationRequest(
        direction=direction,
        start_frame_index=start,
        max_frames=8,
        redetect=Redetect(text="shape", every_n_frames=4),
    )
    events = apply_redetecting_propagation(diff, log, request, detector)
    assert [e.obj_id for e in events if isinstance(e, ObjectAdded)] == [2, 3]
    diff.apply(Prompt(frame_index=start + 6 * sign, obj_id=2, points=[(120, 40)]))
    diff.apply(PropagationRequest(direction=direction, start_frame_index=start, max_frames=10))
    diff.assert_faithful()

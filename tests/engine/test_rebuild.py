"""Identical rebuilds: a session rebuilt in another engine from its prompt log (what a replica
does after its owner died) computes bit-identical masks to a twin that was never rebuilt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployments.engine import Session, SessionEngine
from deployments.protocol import FrameMasks, Prompt, PropagationRequest
from tests.conftest import engine_settings
from tests.videos import circle_at

NUM_FRAMES = 24
REFINED = 8


class Twin:
    """A session in an engine of its own, with the prompt log its journal wrote."""

    def __init__(self, root: Path, predictor, video: Path) -> None:
        self.root, self.predictor = root, predictor
        self.engine = SessionEngine(engine_settings(root), predictor=predictor)
        self.session = self.engine.session(self.engine.create_session(video).session_id)
        self.log: list[dict[str, Any]] = []
        self.session.journal = self.log.append

    def rebuild(self) -> None:
        """The engine goes away (files kept); a new one reopens the session and replays."""
        session_id = self.session.id
        self.engine.shutdown()
        self.engine = SessionEngine(engine_settings(self.root), predictor=self.predictor)
        self.session = self.engine.open_session(session_id)
        self.session.restore(self.log, {})
        self.session.journal = self.log.append


@pytest.fixture
def twins(tmp_path, predictor, video):
    pair = [Twin(tmp_path / name, predictor, video) for name in ("live", "rebuilt")]
    yield pair
    for twin in pair:
        twin.engine.close()


def prompt_and_refine(session: Session) -> None:
    """Two objects, a propagation, then a correction on a frame SAM 2 only tracked to."""
    x, y = circle_at(0, NUM_FRAMES, (160, 120))
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(x, y)]))
    session.add_prompt(Prompt(frame_index=0, obj_id=2, box=(100, 2, 150, 40)))
    list(session.propagate(PropagationRequest(direction="forward")))
    session.add_prompt(Prompt(frame_index=REFINED, obj_id=1, points=[(150, 110)], labels=[0]))


def masks_from_refined_frame(session: Session) -> dict[int, list]:
    request = PropagationRequest(direction="forward", start_frame_index=REFINED)
    events = [e for e in session.propagate(request) if isinstance(e, FrameMasks)]
    return {e.frame_index: [(m.obj_id, m.rle, m.area) for m in e.masks] for e in events}


def test_a_rebuilt_session_propagates_bit_identically_to_its_twin(twins):
    live, rebuilt = twins
    for twin in twins:
        prompt_and_refine(twin.session)
    assert [e["op"] for e in rebuilt.log] == ["prompt"] * 3
    assert rebuilt.log[2]["tracked"] == "forward" and rebuilt.log[2]["seed"] is not None
    rebuilt.rebuild()
    expected = masks_from_refined_frame(live.session)
    assert list(expected) == list(range(REFINED, NUM_FRAMES))
    assert any(area for masks in expected.values() for *_, area in masks)
    assert masks_from_refined_frame(rebuilt.session) == expected


def test_after_an_interrupted_propagation_a_rebuilt_session_keeps_its_frames_and_agrees(twins):
    live, rebuilt = twins
    for twin in twins:
        prompt_and_refine(twin.session)
    interrupted = []
    for twin in twins:
        events = twin.session.propagate(PropagationRequest(start_frame_index=REFINED))
        interrupted.append([next(events) for _ in range(3)])
        events.close()  # the client went away
    assert interrupted[0] == interrupted[1]
    rebuilt.rebuild()
    for event in interrupted[1]:
        assert rebuilt.session.masks.frame(event.frame_index) == event.masks
    assert masks_from_refined_frame(rebuilt.session) == masks_from_refined_frame(live.session)

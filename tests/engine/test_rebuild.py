"""Rebuilds: a session rebuilt in another engine from its checkpoint and prompt log (what a
replica does after its owner died) holds the live session's conditioning outputs bit for bit
and no non-conditioning output, so it computes exactly what its live twin computes once the
twin's retention window has dropped everything at that point."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from deployments.engine import EngineSession, SessionEngine
from deployments.engine import state as sam_state
from deployments.engine.ledger import OUTPUT_TENSORS
from deployments.protocol import FrameMasks, Prompt, PropagationDone, PropagationRequest
from tests.conftest import engine_settings
from tests.videos import circle_at

NUM_FRAMES = 24
REFINED = 8


class Twin:
    """A session in an engine of its own, persisted, with the prompt log its journal wrote."""

    def __init__(self, root: Path, predictor, video: Path) -> None:
        self.root, self.predictor = root, predictor
        self.engine = SessionEngine(engine_settings(root), predictor=predictor)
        self.session = self.engine.session(self.engine.create_session(video).session_id)
        self.log: list[dict[str, Any]] = []
        self.session.persist(self.log.append)

    def rebuild(self) -> None:
        """The engine goes away (files kept); a new one reopens the session and restores it."""
        session_id = self.session.id
        self.engine.shutdown()
        self.engine = SessionEngine(engine_settings(self.root), predictor=self.predictor)
        self.session = self.engine.open_session(session_id)
        self.session.persist(self.log.append)
        self.session.rebuild(self.log, {})

    def drop_window(self) -> None:
        """What the retention window would do with no budget and nothing protected."""
        state = self.session._state
        self.engine.executor.run(
            "test",
            lambda: [
                sam_state.non_cond_outputs(state, i).drop_all() for i in state["obj_idx_to_id"]
            ],
        )


@pytest.fixture
def twins(tmp_path, predictor, video):
    pair = [Twin(tmp_path / name, predictor, video) for name in ("live", "rebuilt")]
    yield pair
    for twin in pair:
        twin.engine.close()


def prompt_and_refine(session: EngineSession) -> None:
    """Two objects, a propagation, then a correction on a frame SAM 2 only tracked to."""
    x, y = circle_at(0, NUM_FRAMES, (160, 120))
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(x, y)]))
    session.add_prompt(Prompt(frame_index=0, obj_id=2, box=(100, 2, 150, 40)))
    list(session.propagate(PropagationRequest(direction="forward")))
    session.add_prompt(Prompt(frame_index=REFINED, obj_id=1, points=[(150, 110)], labels=[0]))


def after_the_rebuild(session: EngineSession) -> tuple[list, dict[int, list], bool]:
    """A correction click, then a propagation from the refined frame: masks and exactness."""
    click = session.add_prompt(Prompt(frame_index=14, obj_id=2, points=[(120, 20)]))
    request = PropagationRequest(direction="forward", start_frame_index=REFINED)
    events = list(session.propagate(request))
    frames = {
        e.frame_index: [(m.obj_id, m.rle, m.area) for m in e.masks]
        for e in events
        if isinstance(e, FrameMasks)
    }
    [done] = [e for e in events if isinstance(e, PropagationDone)]
    return [(m.obj_id, m.rle) for m in click.masks] + [click.exact], frames, done.exact


def prompt_outputs(session: EngineSession) -> dict[tuple, torch.Tensor]:
    """Every conditioning and pending prompt output's tensors, by object, frame and kind."""
    state = session._state
    found = {}
    for obj_id, idx in state["obj_id_to_idx"].items():
        for kind, per_obj in (
            ("cond", "output_dict_per_obj"),
            ("temp", "temp_output_dict_per_obj"),
        ):
            for frame, out in state[per_obj][idx]["cond_frame_outputs"].items():
                for name in OUTPUT_TENSORS:
                    if out.get(name) is not None:
                        found[(obj_id, frame, kind, name)] = out[name]
    return found


def test_a_rebuilt_session_holds_the_live_prompt_outputs_bit_for_bit(twins):
    live, rebuilt = twins
    for twin in twins:
        prompt_and_refine(twin.session)
    assert [e["op"] for e in rebuilt.log] == ["prompt"] * 3
    rebuilt.rebuild()
    expected, got = prompt_outputs(live.session), prompt_outputs(rebuilt.session)
    assert expected.keys() == got.keys() and len(expected) >= 12
    for key, tensor in expected.items():
        assert torch.equal(tensor, got[key]), key
    tracked = rebuilt.session._state["frames_tracked_per_obj"]
    assert list(tracked[0]) == list(range(NUM_FRAMES))
    held = sam_state.non_cond_outputs(rebuilt.session._state, 0)
    assert not held and held.dropped.count(1) == NUM_FRAMES - 1  # frame 0 is conditioning


def test_a_rebuilt_session_computes_what_its_twin_computes_with_its_window_dropped(twins):
    live, rebuilt = twins
    for twin in twins:
        prompt_and_refine(twin.session)
    rebuilt.rebuild()
    live.drop_window()
    click, frames, exact = after_the_rebuild(live.session)
    assert list(frames) == list(range(REFINED, NUM_FRAMES))
    assert any(area for masks in frames.values() for *_, area in masks)
    assert click[-1] is False and exact is False  # the click read dropped memories
    assert after_the_rebuild(rebuilt.session) == (click, frames, exact)


def test_a_session_rebuilt_after_its_replica_died_mid_propagation_agrees(twins):
    """The checkpoint written as the propagation started says it was under way: the frames it
    stored were tracked, and stock SAM 2 would hold their outputs."""
    live, rebuilt = twins
    for twin in twins:
        prompt_and_refine(twin.session)
    checkpoint = rebuilt.session.directory / "sam2_state"
    snapshot = rebuilt.root / "checkpoint-mid-propagation"
    interrupted = []
    for twin in twins:
        events = twin.session.propagate(PropagationRequest(start_frame_index=REFINED))
        interrupted.append([next(events) for _ in range(3)])
        if twin is rebuilt:
            shutil.copytree(checkpoint, snapshot)  # as the replica died: the start's checkpoint
        events.close()
    assert interrupted[0] == interrupted[1]
    shutil.rmtree(checkpoint)
    shutil.copytree(snapshot, checkpoint)
    rebuilt.rebuild()
    for event in interrupted[1]:
        assert rebuilt.session.masks.frame(event.frame_index) == event.masks
    live.drop_window()
    live_tracked = live.session._state["frames_tracked_per_obj"]
    rebuilt_tracked = rebuilt.session._state["frames_tracked_per_obj"]
    for idx in live_tracked:
        assert bytes(live_tracked[idx].codes) == bytes(rebuilt_tracked[idx].codes)
    assert after_the_rebuild(rebuilt.session) == after_the_rebuild(live.session)


def test_a_log_without_checkpoint_replays_and_says_it_is_approximate(twins):
    """A session persisted before checkpoints existed: its log entries say how each prompted
    frame had been tracked; the replay shows SAM 2 that and marks every output inexact."""
    _, rebuilt = twins
    prompt_and_refine(rebuilt.session)
    shutil.rmtree(rebuilt.session.directory / "sam2_state")
    rebuilt.log[:] = [{**entry, "tracked": None, "seed": None} for entry in rebuilt.log]
    rebuilt.rebuild()
    assert sorted(rebuilt.session._state["obj_ids"]) == [1, 2]
    events = list(rebuilt.session.propagate(PropagationRequest(direction="forward")))
    done = events[-1]
    assert isinstance(done, PropagationDone)
    assert done.exact is False and done.approximate_frames == [(0, NUM_FRAMES - 1)]

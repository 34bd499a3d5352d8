"""Memory comes back: a deleted session's objects are freed as soon as it is deleted, by
reference counting alone (not at the garbage collector's next full pass, which in a replica's
large heap comes rarely), and the engine then hands the C heap's free pages back to the OS
(``host_memory``). Counts of objects only: RSS is measured by scripts/bench_session_churn.py."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from deployments.engine import engine as engine_module
from deployments.engine.host_memory import release_free_memory
from deployments.engine.video_index import VideoIndex
from deployments.engine.video_reader import VideoReader
from deployments.engine.video_selection import select_frames
from deployments.protocol import Prompt, PropagationRequest, VideoOptions


@contextmanager
def garbage_collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def tensors_alive() -> int:
    gc.collect()
    return sum(issubclass(type(obj), torch.Tensor) for obj in gc.get_objects())


def annotate(engine, video) -> str:
    session = engine.session(engine.create_session(video).session_id)
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=3, obj_id=2, points=[(120, 30)]))
    for _ in session.propagate(PropagationRequest(direction="both")):
        pass
    return session.id


def test_a_closed_reader_lets_go_of_its_frames_and_decoder(video):
    index = VideoIndex.build(video)
    selection = select_frames(index, VideoOptions(), max_frames=1000)
    with garbage_collector_off():
        reader = VideoReader(video, index, selection)
        for k in range(6):
            reader.frame(k)
        decoder = weakref.ref(reader._decoder)
        reader.close()
        assert reader.buffer_nbytes() == 0
        del reader
        # Its decoding generator once held it in a reference cycle (with PyAV's codec buffers).
        assert decoder() is None


def test_a_deleted_session_is_freed_at_once_and_leaves_no_tensor(engine, video):
    engine.delete_session(annotate(engine, video))  # the model's first-call buffers
    before = tensors_alive()
    with garbage_collector_off():
        session = engine.session(annotate(engine, video))
        held = {
            name: weakref.ref(obj)
            for name, obj in [
                ("session", session),
                ("frames", session.frames),
                ("masks", session.masks),
                ("feature cache", session.feature_cache),
            ]
        }
        engine.delete_session(session.id)
        del session
        assert [name for name, ref in held.items() if ref() is not None] == []
    assert tensors_alive() == before


def test_deleting_or_forgetting_a_session_releases_free_memory(engine, video, monkeypatch):
    calls = []
    monkeypatch.setattr(engine_module, "release_free_memory", lambda: calls.append(1))
    engine.delete_session(engine.create_session(video).session_id)
    assert len(calls) == 1
    session_id = engine.create_session(video).session_id
    engine.forget_session(session_id)
    engine.forget_session(session_id)  # not held any more: nothing to release
    assert len(calls) == 2


def test_release_free_memory_runs_on_any_platform():
    assert release_free_memory() in (True, False)

"""Every public method of ``AsyncClient`` (and of its ``AsyncPropagationStream``) against the
real local service, on one short session where a session serves. ``scripts/unasync.py`` makes
``test_every_method_sync.py`` from this file, as it makes the synchronous client from the
asyncio one: the same calls and checks run on both clients."""

from __future__ import annotations

import asyncio
import time
import zipfile
from typing import Any

import cv2
import numpy as np
import pytest

from sam2serve import AsyncClient, NotFoundError, Redetect, RetryPolicy
from tests.client.conftest import NUM_FRAMES, SIZE, TEXT
from tests.videos import circle_at


class Recorder:
    """A client that notes the name of each attribute read from it (each method called)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self.client, name)


def public_methods(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def png_image() -> bytes:
    image = np.full((90, 120, 3), 30, np.uint8)
    cv2.circle(image, (60, 45), 20, (50, 200, 50), -1)
    return cv2.imencode(".png", image)[1].tobytes()


async def until_ready(client: Any, session_id: str) -> None:
    """Wait until the session runs no propagation (one closed early stops after its frame)."""
    deadline = time.monotonic() + 60
    while True:
        session = await client.get_session(session_id)
        if session.status == "ready":
            return
        assert time.monotonic() < deadline, "the propagation did not stop"
        await asyncio.sleep(0.1)


async def test_every_method_of_the_client(service, video, tmp_path):
    retry = RetryPolicy(max_attempts=60, max_wait_s=60)
    client = Recorder(AsyncClient(service.url, api_key=service.api_key, retry=retry))
    health = await client.health()
    assert health.ready and health.capacity == 2
    models = await client.models()
    assert any(m.name == models.default for m in models.models)
    segmented = await client.segment_image(png_image(), points=[(60, 45)], labels=[1])
    assert segmented.masks[0].to_numpy().shape == (90, 120) and segmented.instances == []
    found = await client.segment_image(png_image(), text=TEXT)
    assert found.masks == [] and all(i.to_numpy().shape == (90, 120) for i in found.instances)

    sent: list[int] = []
    uploaded = await client.create_session(
        video, max_side=80, progress=lambda done, total: sent.append(done)
    )
    assert sent[-1] == video.stat().st_size and uploaded.video.width == 80
    assert (await client.get_session(uploaded.session_id)).video.num_frames == NUM_FRAMES
    await client.delete_session(uploaded.session_id)

    session = await client.create_session_from_server("clip.mp4", end_time=0.6)
    sid, count = session.session_id, session.video.num_frames
    assert 2 < count < NUM_FRAMES
    assert [s.session_id for s in await client.list_sessions()] == [sid]
    assert (await client.frame_jpeg(sid, 0))[:2] == b"\xff\xd8"
    x, y = circle_at(1, NUM_FRAMES, SIZE)
    assert (await client.add_prompt(sid, 1, points=[(x, y)], labels=[1])).obj_id == 1
    boxed = await client.add_prompt(sid, 1, box=(105, 10, 140, 45))
    assert [m.obj_id for m in boxed.masks] == [1, 2]
    assert (await client.update_object(sid, 2, name="square")).name == "square"
    cleared = await client.clear_prompts(sid, 1, obj_id=2)
    assert cleared.frame_index == 1 and [m.obj_id for m in cleared.masks] == [1]
    await client.delete_object(sid, 2)
    assert [o.obj_id for o in await client.list_objects(sid)] == [1]

    summary = await client.propagate(sid, direction="forward")
    assert summary.frames == count - 1 and not summary.cancelled
    stream = await client.propagate_stream(sid, transport="websocket")  # both ways: the default
    async with stream:
        indices = [frame.frame_index async for frame in stream]
    assert indices == [*range(1, count), 0] and stream.summary.frames == count
    assert await client.cancel_propagation(sid) is False  # none runs
    stream = await client.propagate_stream(sid, direction="forward", start_frame_index=2)
    assert (await anext(stream)).frame_index == 2
    await stream.aclose()  # stops the propagation after the frame in flight
    await until_ready(client, sid)

    page = await client.masks(sid, limit=2)
    assert [f.frame_index for f in page.frames] == [0, 1] and page.next_start == 2
    stored = [frame.frame_index async for frame in client.iter_masks(sid, page_size=2)]
    assert stored == list(range(count))
    assert all(r.obj_id == 1 for r in await client.review(sid))  # the server's thresholds
    assert (await client.overlay_jpeg(sid, 1))[:2] == b"\xff\xd8"
    timeline = await client.object_timeline(sid, 1)
    assert timeline.prompt_frames == [1]
    redetect = Redetect(text=TEXT, every_n_frames=1)
    stream = await client.propagate_stream(sid, direction="forward", redetect=redetect)
    listed: dict[int, set[int]] = {}  # by frame: the objects listed when it arrived
    async with stream:
        async for frame in stream:
            listed[frame.frame_index] = {o.obj_id for o in stream.objects_added}
    added = stream.objects_added  # an instance on frame 1 first
    assert (added[0].frame_index, added[0].name) == (1, f"{TEXT} 1")
    assert all(o.category == TEXT and o.obj_id in listed[o.frame_index] for o in added)
    texted = await client.add_text_prompt(sid, 1, TEXT)  # it finds that object again
    assert all(o.category == TEXT for o in texted.objects)
    assert added[0].obj_id in [o.obj_id for o in texted.objects if o.matched]
    davis = await client.export(sid, "davis", tmp_path / "davis.zip")
    with zipfile.ZipFile(davis) as archive:
        assert len(archive.namelist()) == count
    assert (await client.reset_session(sid)).objects == []
    await client.delete_session(sid)
    with pytest.raises(NotFoundError):
        await client.get_session(sid)

    track = await client.track(video, tmp_path / "track.zip", frame_idx=0, points=[(40, 60)])
    with zipfile.ZipFile(track) as archive:
        assert archive.namelist() == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    await client.aclose()
    assert client.called == public_methods(AsyncClient)

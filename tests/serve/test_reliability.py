"""Sessions survive faults, on one stack (real Ray Serve, a real redis-server with AOF): their
replica's death (rebuilt on a live replica from the shared storage and the prompt log its owner
wrote, masks kept), two rebuilds at once, an ingress killed mid-propagation, a create whose
caller gave up, a Redis restart (mid-propagation too), downscaling from two replicas to one.
Leases lapse and reconciliation runs within seconds here (``lease_s``, ``reconcile_s``)."""

from __future__ import annotations

import asyncio
import fractions
import json
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import av
import pytest
import ray
from ray import serve

from deployments.app import build_app
from deployments.protocol import ServiceSettings
from session_store import Lease, SessionRecord, SessionStore, open_store
from tests.serve.conftest import deploy, stack_settings
from tests.servers import RedisServer
from tests.videos import write_video

T = TypeVar("T")

APP = "rely"
NDJSON = {"accept": "application/x-ndjson"}
LONG_CLIP_FRAMES = 48


@pytest.fixture(scope="module")
def aof_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("aof"), appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(http_port, aof_redis, tmp_path_factory):
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"),
        redis_url=aof_redis.url,
        lease_s=3,
        expiry_check_s=0.5,
        reconcile_s=1,
    )
    return deploy(http_port, APP, settings)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """Long enough that a propagation is still running when the test acts on it."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_video(path, num_frames=LONG_CLIP_FRAMES)


@pytest.fixture(scope="module")
def slow_to_index(tmp_path_factory) -> Path:
    """500,000 tiny frames at 1,000 fps (16 MB): indexing it (a demux) takes over a second."""
    seed = write_video(tmp_path_factory.mktemp("seed") / "seed.mkv", num_frames=3, size=(16, 16))
    target = seed.with_name("many.mkv")
    with av.open(str(seed)) as source, av.open(str(target), "w") as out:
        packets = [p for p in source.demux(source.streams.video[0]) if p.size]
        stream = out.add_stream_from_template(source.streams.video[0])
        stream.time_base = fractions.Fraction(1, 1000)
        for i in range(500_000):
            packet = packets[min(i, 1)]  # a keyframe, then the same small delta frame
            packet.pts = packet.dts = i
            packet.time_base, packet.stream = stream.time_base, stream
            out.mux(packet)
    return target


def kill_actor(deployment: str, replica: str) -> None:
    actor = ray.get_actor(f"SERVE_REPLICA::{APP}#{deployment}#{replica}", namespace="serve")
    ray.kill(actor, no_restart=True)


def replica_ids(deployment: str) -> list[str]:
    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    return [n.removeprefix(prefix) for n in names if n.startswith(prefix)]


def in_store(redis: RedisServer, use: Callable[[SessionStore], Awaitable[T]]) -> T:
    """``use`` run on a client of the stack's session store."""

    async def run() -> T:
        store = open_store(ServiceSettings(redis_url=redis.url))
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def stored(redis: RedisServer, session_id: str) -> SessionRecord | None:
    return in_store(redis, lambda store: store.get(session_id))


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def active_sessions(stack) -> int:
    return stack.client.get("/health").json()["active_sessions"]


def session_dirs(stack) -> set[str]:
    root = Path(stack.settings["storage_root"])
    return {p.name for p in root.iterdir() if not p.name.startswith(".")}


def new_clicked_session(stack, video: Path) -> tuple[dict, str]:
    session = stack.upload(video).json()
    base = f"/api/v1/sessions/{session['session_id']}"
    assert click(stack, base, 0).status_code == 200
    return session, base


def masks_by_frame(stack, base: str) -> dict[int, list]:
    frames = stack.client.get(f"{base}/masks").json()["frames"]
    return {f["frame_index"]: f["masks"] for f in frames}


def click(stack, base: str, frame: int, x: float = 40, obj_id: int = 1):
    return stack.client.post(
        f"{base}/prompts", json={"frame_index": frame, "obj_id": obj_id, "points": [[x, 60]]}
    )


def wait_healthy(stack, replicas: int) -> None:
    for _ in range(240):
        try:
            health = stack.client.get("/health").json()
            capacity = replicas * stack.settings["max_sessions"]
            if (health["replicas"], health["capacity"]) == (replicas, capacity):
                return  # every replica up and reporting its slots
        except Exception:  # the ingress is restarting
            pass
        time.sleep(0.5)
    raise AssertionError("the app did not recover")


def test_killed_owner_next_click_rebuilds_elsewhere_and_keeps_masks(stack, video):
    session = stack.upload(video).json()
    sid, owner = session["session_id"], session["replica"]
    base = f"/api/v1/sessions/{sid}"
    click(stack, base, 0)
    stack.client.post(f"{base}/prompts", json={"frame_index": 0, "box": [100, 10, 150, 50]})
    stack.client.patch(f"{base}/objects/2", json={"name": "square"})
    assert stack.client.post(f"{base}/propagate", json={"direction": "forward"}).status_code == 200
    before = masks_by_frame(stack, base)

    kill_actor("SAM2Replica", owner)
    response = click(stack, base, 9, x=90)
    assert response.status_code == 200, response.text
    after = stack.client.get(base).json()
    assert after["replica"] != owner and after["status"] == "ready"
    assert {o["obj_id"]: o["name"] for o in after["objects"]} == {1: None, 2: "square"}
    assert {o["obj_id"]: o["prompt_frames"] for o in after["objects"]} == {1: [0, 9], 2: [0]}
    now = masks_by_frame(stack, base)
    assert all(now[f] == before[f] for f in before if f != 9)  # propagated masks unchanged
    again = stack.client.post(f"{base}/propagate", json={"direction": "forward"})
    assert again.status_code == 200 and again.json()["frames"] == len(before)
    stack.client.delete(base)
    wait_healthy(stack, 2)


def test_the_owner_logs_each_applied_edit_numbered_and_a_rebuild_continues_the_numbers(
    stack, aof_redis, video
):
    session = stack.upload(video).json()
    sid, base = session["session_id"], f"/api/v1/sessions/{session['session_id']}"
    with ThreadPoolExecutor(4) as pool:  # concurrent clicks: logged in the order applied
        clicks = list(pool.map(lambda f: click(stack, base, f), [0, 3, 6, 9]))
    assert all(r.status_code == 200 for r in clicks)
    stack.client.post(f"{base}/prompts", json={"frame_index": 2, "box": [100, 10, 150, 50]})
    stack.client.delete(f"{base}/frames/3/prompts", params={"obj_id": 1})
    stack.client.delete(f"{base}/objects/2")
    log = in_store(aof_redis, lambda store: store.log(sid))
    assert [e["seq"] for e in log] == list(range(1, 8))
    assert [e["op"] for e in log] == ["prompt"] * 5 + ["clear", "remove_object"]
    assert sorted(e["prompt"]["frame_index"] for e in log[:4]) == [0, 3, 6, 9]
    assert (log[4]["prompt"]["obj_id"], log[6]["obj_id"]) == (2, 2)

    kill_actor("SAM2Replica", session["replica"])
    assert click(stack, base, 12).status_code == 200  # rebuilt from the log, then applied
    objects = stack.client.get(base).json()["objects"]
    assert [(o["obj_id"], o["prompt_frames"]) for o in objects] == [(1, [0, 6, 9, 12])]
    assert stack.client.post(f"{base}/reset").status_code == 200
    log = in_store(aof_redis, lambda store: store.log(sid))
    assert [(e["op"], e["seq"]) for e in log] == [("reset", 9)]
    assert in_store(aof_redis, lambda store: store.objects(sid)) == []
    stack.client.delete(base)
    wait_healthy(stack, 2)


def test_two_requests_rebuilding_one_session_at_once_rebuild_it_once(stack, aof_redis, video):
    session, base = new_clicked_session(stack, video)
    kill_actor("SAM2Replica", session["replica"])
    start = threading.Barrier(2)

    def click_at(frame: int):
        start.wait()
        return click(stack, base, frame)

    with ThreadPoolExecutor(2) as pool:
        responses = dict(zip([3, 6], pool.map(click_at, [3, 6]), strict=True))
    won = [f for f, r in responses.items() if r.status_code == 200]
    lost = [r for r in responses.values() if r.status_code != 200]
    assert won and all(r.status_code == 503 for r in lost), [r.text for r in lost]
    assert all(r.headers["Retry-After"] == "7" for r in lost)
    assert all(r.json()["error"]["code"] == "session_unavailable" for r in lost)
    [obj] = stack.client.get(base).json()["objects"]
    assert obj["prompt_frames"] == [0, *won]
    wait_healthy(stack, 2)
    wait_for(lambda: active_sessions(stack) == 1, "the replicas to report one copy of it")
    assert stored(aof_redis, session["session_id"]).status() == "ready"
    stack.client.delete(base)


def test_replicas_free_sessions_whose_record_is_gone_or_names_another_owner(
    stack, aof_redis, video
):
    (gone, _), (moved, moved_base) = (new_clicked_session(stack, video) for _ in range(2))
    wait_for(lambda: active_sessions(stack) == 2, "the replicas to report both sessions")
    in_store(aof_redis, lambda store: store.delete(gone["session_id"]))

    def elsewhere(record: SessionRecord) -> SessionRecord:
        return record.model_copy(update={"replica": "a-replica-elsewhere"})

    in_store(aof_redis, lambda store: store.transition(moved["session_id"], elsewhere))
    wait_for(lambda: active_sessions(stack) == 0, "reconciliation to free both sessions")
    assert session_dirs(stack) == {moved["session_id"]}  # forgotten, not deleted
    response = click(stack, moved_base, 4)  # rebuilt from its files and log
    assert response.status_code == 200, response.text
    stack.client.delete(moved_base)


def test_a_create_whose_caller_timed_out_leaves_no_files_nor_slot(
    http_port, aof_redis, tmp_path, slow_to_index
):
    settings = stack_settings(
        tmp_path,
        redis_url=aof_redis.url,
        min_replicas=1,
        max_replicas=1,
        max_sessions=1,
        create_timeout_s=0.3,
        reconcile_s=1,
    )
    late = deploy(http_port, "late", settings)
    try:
        response = late.upload(slow_to_index, end_time="1")
        assert response.status_code == 504, response.text
        assert session_dirs(late), "the replica was still creating the session"
        wait_for(lambda: not session_dirs(late), "the late session's files to go")
        wait_for(lambda: active_sessions(late) == 0, "the late session's slot to be free")
        assert list((tmp_path / ".uploads").iterdir()) == []
    finally:
        serve.delete("late")


def test_after_an_ingress_dies_mid_propagation_its_lease_lapses(stack, aof_redis, long_clip):
    (resumed, resumed_base), (idle, _) = (new_clicked_session(stack, long_clip) for _ in range(2))
    with (
        stack.client.stream("POST", f"{resumed_base}/propagate", json={}, headers=NDJSON) as one,
        stack.client.stream(
            "POST", f"/api/v1/sessions/{idle['session_id']}/propagate", json={}, headers=NDJSON
        ) as two,
    ):
        assert [json.loads(next(s.iter_lines()))["type"] for s in (one, two)] == ["frame"] * 2
        [ingress] = replica_ids("Ingress")
        kill_actor("Ingress", ingress)
    leases = [stored(aof_redis, s["session_id"]).lease for s in (resumed, idle)]
    assert [lease.kind for lease in leases] == ["propagating"] * 2  # left behind by the dead
    wait_healthy(stack, 2)

    def propagated() -> bool:
        response = stack.client.post(f"{resumed_base}/propagate", json={"direction": "forward"})
        assert response.status_code in (200, 409), response.text  # 409: the old one still runs
        return response.status_code == 200

    wait_for(propagated, "a new propagation to be accepted", timeout_s=60)
    assert stored(aof_redis, resumed["session_id"]).lease is None  # released by its holder
    past = datetime.now(UTC) - timedelta(seconds=1)
    in_store(aof_redis, lambda store: store.update(idle["session_id"], expires_at=past))
    wait_for(lambda: stored(aof_redis, idle["session_id"]) is None, "the idle session to expire")
    assert idle["session_id"] not in session_dirs(stack)
    stack.client.delete(resumed_base)


def test_expiry_skips_only_a_session_under_a_live_lease(stack, aof_redis, video):
    held, idle = (stack.upload(video).json()["session_id"] for _ in range(2))
    lease = Lease(kind="propagating", holder="test", until=datetime.now(UTC) + timedelta(hours=1))

    def hold(record: SessionRecord) -> SessionRecord:
        return record.model_copy(update={"lease": lease})

    def release(record: SessionRecord) -> SessionRecord:
        return record.model_copy(update={"lease": None})

    in_store(aof_redis, lambda store: store.transition(held, hold))
    past = datetime.now(UTC) - timedelta(seconds=1)
    for sid in (held, idle):
        in_store(aof_redis, lambda store, sid=sid: store.update(sid, expires_at=past))
    wait_for(lambda: stored(aof_redis, idle) is None, "the idle session to expire")
    assert stored(aof_redis, held).status() == "propagating"  # the same round skipped it
    in_store(aof_redis, lambda store: store.transition(held, release))
    wait_for(lambda: stored(aof_redis, held) is None, "the released session to expire")
    wait_for(lambda: not {held, idle} & session_dirs(stack), "the expired sessions' files to go")


def test_sessions_survive_an_ingress_restart(stack, video):
    sid = stack.upload(video).json()["session_id"]
    [ingress] = replica_ids("Ingress")
    kill_actor("Ingress", ingress)
    wait_healthy(stack, 2)
    listed = [s["session_id"] for s in stack.client.get("/api/v1/sessions").json()["sessions"]]
    assert sid in listed
    assert click(stack, f"/api/v1/sessions/{sid}", 2).status_code == 200
    stack.client.delete(f"/api/v1/sessions/{sid}")


def test_sessions_survive_a_redis_restart_with_aof(stack, aof_redis, video):
    sid = stack.upload(video).json()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    assert click(stack, base, 0).status_code == 200
    aof_redis.stop()
    aof_redis.start()
    listed = [s["session_id"] for s in stack.client.get("/api/v1/sessions").json()["sessions"]]
    assert sid in listed
    response = click(stack, base, 3)
    assert response.status_code == 200, response.text
    assert stack.client.get(base).json()["objects"][0]["prompt_frames"] == [0, 3]
    stack.client.delete(base)


def test_a_redis_restart_mid_propagation_keeps_its_frames_and_the_session(
    stack, aof_redis, long_clip
):
    session, base = new_clicked_session(stack, long_clip)
    with stack.client.stream("POST", f"{base}/propagate", json={}, headers=NDJSON) as stream:
        lines = stream.iter_lines()
        events = [json.loads(next(lines))]
        aof_redis.stop()
        aof_redis.start()
        events += [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["frame"] * LONG_CLIP_FRAMES + ["done"]
    assert len(masks_by_frame(stack, base)) == LONG_CLIP_FRAMES
    assert click(stack, base, 5).status_code == 200
    assert stored(aof_redis, session["session_id"]).lease is None
    stack.client.delete(base)


def session_not_on(stack, video: Path, replica: str) -> dict:
    """A new session that another replica than ``replica`` owns (placement follows free slots:
    a session or two more fills the one it favours)."""
    extra = []
    while (session := stack.upload(video).json())["replica"] == replica:
        assert len(extra) < 2, "every new session went to the same replica"
        extra.append(session)
    for other in extra:
        stack.client.delete(f"/api/v1/sessions/{other['session_id']}")
    return session


def test_a_session_rebuilt_after_its_owner_died_reports_every_frame_unlike_its_twin(stack, video):
    """A rebuilt session holds its prompts' outputs bit for bit but none of the tracked frames'
    (tests/engine/test_rebuild.py shows it equals its twin with that window dropped): its next
    propagation may differ from the never-rebuilt twin's only on frames it reports inexact."""
    live = stack.upload(video).json()
    twin = session_not_on(stack, video, live["replica"])
    bases = [f"/api/v1/sessions/{s['session_id']}" for s in (live, twin)]
    refine = {"frame_index": 8, "obj_id": 1, "points": [[150, 110]], "labels": [0]}
    for base in bases:
        assert click(stack, base, 0).status_code == 200
        propagated = stack.client.post(f"{base}/propagate", json={"direction": "forward"})
        assert propagated.status_code == 200
        assert stack.client.post(f"{base}/prompts", json=refine).status_code == 200
    assert masks_by_frame(stack, bases[0]) == masks_by_frame(stack, bases[1])

    kill_actor("SAM2Replica", twin["replica"])
    again = {"direction": "forward", "start_frame_index": 8}
    summaries = []
    for base in bases:
        response = stack.client.post(f"{base}/propagate", json=again)
        assert response.status_code == 200, response.text
        summaries.append(response.json())
    assert stack.client.get(bases[1]).json()["replica"] != twin["replica"]  # rebuilt
    assert summaries[0]["exact"] is True and summaries[0]["approximate_frames"] == []
    approximate = {
        f for first, last in summaries[1]["approximate_frames"] for f in range(first, last + 1)
    }
    assert summaries[1]["exact"] is (not approximate)
    live_masks, rebuilt_masks = masks_by_frame(stack, bases[0]), masks_by_frame(stack, bases[1])
    assert live_masks.keys() == rebuilt_masks.keys()
    differing = {f for f in live_masks if live_masks[f] != rebuilt_masks[f]}
    assert differing <= approximate, (differing, approximate)
    for base in bases:
        stack.client.delete(base)
    wait_healthy(stack, 2)


def test_a_replica_killed_mid_propagation_keeps_its_frames_and_a_new_one_completes(
    stack, long_clip
):
    session, base = new_clicked_session(stack, long_clip)
    with stack.client.stream("POST", f"{base}/propagate", json={}, headers=NDJSON) as stream:
        lines = stream.iter_lines()
        streamed = [json.loads(next(lines)) for _ in range(3)]
        kill_actor("SAM2Replica", session["replica"])
        ended = [json.loads(line)["type"] for line in lines]
    assert ended[-1:] == ["error"]
    kept = masks_by_frame(stack, base)  # read through the rebuilt session
    assert all(kept[e["frame_index"]] == e["masks"] for e in streamed)

    def propagated() -> bool:
        response = stack.client.post(f"{base}/propagate", json={"direction": "forward"})
        assert response.status_code in (200, 409), response.text  # 409: its lease not yet back
        return response.status_code == 200 and response.json()["frames"] == LONG_CLIP_FRAMES

    wait_for(propagated, "a new propagation to complete")
    stack.client.delete(base)
    wait_healthy(stack, 2)


def test_deleting_a_session_mid_propagation_stops_it_and_removes_its_files(stack, long_clip):
    session, base = new_clicked_session(stack, long_clip)
    with stack.client.stream("POST", f"{base}/propagate", json={}, headers=NDJSON) as stream:
        lines = stream.iter_lines()
        assert json.loads(next(lines))["type"] == "frame"
        assert stack.client.delete(base).status_code == 204
        events = [json.loads(line)["type"] for line in lines]
    assert "error" not in events and len(events) < LONG_CLIP_FRAMES
    assert session["session_id"] not in session_dirs(stack)
    assert stack.client.get(base).status_code == 404


def test_downscaling_from_two_replicas_to_one_keeps_every_session(stack, video):
    for _ in range(40):  # the replicas' reports no longer count earlier tests' sessions
        if stack.client.get("/health").json()["active_sessions"] == 0:
            break
        time.sleep(0.25)
    time.sleep(2.0)  # and the router's own placements of them have lapsed
    sessions = [stack.upload(video).json() for _ in range(2)]
    assert len({s["replica"] for s in sessions}) == 2
    for s in sessions:
        assert click(stack, f"/api/v1/sessions/{s['session_id']}", 0).status_code == 200
    serve.run(
        build_app({**stack.settings, "min_replicas": 1, "max_replicas": 1}),
        name=APP,
        route_prefix=f"/{APP}",
    )
    wait_healthy(stack, 1)
    for s in sessions:
        base = f"/api/v1/sessions/{s['session_id']}"
        response = click(stack, base, 5)
        assert response.status_code == 200, response.text
        assert stack.client.get(base).json()["objects"][0]["prompt_frames"] == [0, 5]

"""One contract for every SessionStore: in-memory, the Ray actor store, and Redis (a real
redis-server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import ray

from session_store import ObjectRecord, SessionRecord, open_store
from session_store.memory import InMemorySessionStore
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(params=["memory", "actor", "redis"])
async def store(request):
    if request.param == "memory":
        store = InMemorySessionStore()
    elif request.param == "actor":
        request.getfixturevalue("ray_cluster")
        from session_store.actor import ActorSessionStore

        store = ActorSessionStore(name=f"store-{uuid.uuid4().hex}")
    else:
        store = open_store(request.getfixturevalue("redis_server").url)
    yield store
    for record in await store.list():
        await store.delete(record.session_id)
    await store.close()
    if request.param == "actor":
        store.kill()


def record(session_id: str = "s1", minutes: int = 0) -> SessionRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return SessionRecord(
        session_id=session_id,
        model="sam2.1_hiera_tiny",
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(minutes=30),
        video={"num_frames": 24, "width": 160, "height": 120},
        options={"max_side": 80},
    )


async def test_create_get_and_ids_are_unique(store):
    assert await store.create(record()) is True
    assert await store.create(record()) is False
    assert await store.get("s1") == record()
    assert await store.get("missing") is None


async def test_list_is_oldest_first(store):
    await store.create(record("late", minutes=5))
    await store.create(record("early", minutes=1))
    assert [r.session_id for r in await store.list()] == ["early", "late"]


async def test_update_changes_fields_and_ignores_unknown_sessions(store):
    await store.create(record())
    updated = await store.update("s1", status="propagating", replica="replica-a")
    assert (updated.status, updated.replica) == ("propagating", "replica-a")
    assert await store.get("s1") == updated
    assert await store.update("missing", status="ready") is None
    assert await store.get("missing") is None


async def test_objects_by_id(store):
    await store.create(record())
    await store.put_object("s1", ObjectRecord(obj_id=2, name="b"))
    await store.put_object("s1", ObjectRecord(obj_id=1, name="a", category="tool"))
    await store.put_object("s1", ObjectRecord(obj_id=2, name="renamed"))
    assert [(o.obj_id, o.name) for o in await store.objects("s1")] == [(1, "a"), (2, "renamed")]
    await store.delete_object("s1", 1)
    assert [o.obj_id for o in await store.objects("s1")] == [2]


async def test_prompt_log_keeps_order_and_clear_empties_it(store):
    await store.create(record())
    entries = [{"op": "prompt", "n": i, "points": [[1.5, 2.0]]} for i in range(5)]
    for entry in entries:
        await store.append_log("s1", entry)
    assert await store.log("s1") == entries
    await store.put_object("s1", ObjectRecord(obj_id=1))
    await store.clear("s1")
    assert await store.log("s1") == [] and await store.objects("s1") == []
    assert await store.get("s1") is not None


async def test_delete_removes_everything(store):
    await store.create(record())
    await store.put_object("s1", ObjectRecord(obj_id=1))
    await store.append_log("s1", {"op": "reset"})
    assert await store.delete("s1") is True
    assert await store.delete("s1") is False
    assert await store.get("s1") is None
    assert await store.objects("s1") == [] and await store.log("s1") == []
    assert await store.list() == []
    await store.append_log("s1", {"op": "reset"})
    assert await store.log("s1") == []


async def test_ping(store):
    assert await store.ping() is True


async def test_owner_lease_is_a_compare_and_set(store):
    await store.create(record())
    await store.update("s1", replica="dead-replica")
    assert await store.claim("s1", expected="other", replica="x", status="restoring") is False
    assert await store.claim("s1", expected="dead-replica", replica=None, status="restoring")
    # a second rebuild racing the first loses
    assert (
        await store.claim("s1", expected="dead-replica", replica=None, status="restoring") is False
    )
    assert (await store.get("s1")).replica is None
    assert await store.claim("s1", expected=None, replica="new-replica", status="ready")
    current = await store.get("s1")
    assert (current.replica, current.status) == ("new-replica", "ready")
    assert await store.claim("missing", expected=None, replica="x", status="ready") is False

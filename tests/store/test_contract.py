"""One contract for every SessionStore: in-memory, the Ray actor store, and Redis (a real
redis-server)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from deployments.protocol import ServiceSettings
from session_store import Lease, ObjectRecord, SessionRecord, open_store
from session_store.memory import InMemorySessionStore
from tests.servers import RedisServer, local_ray


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray(num_cpus=1):
        yield


@pytest.fixture(params=["memory", "actor", "redis"])
async def store(request):
    if request.param == "memory":
        store = InMemorySessionStore()
    elif request.param == "actor":
        request.getfixturevalue("ray_cluster")
        from session_store.actor import ActorSessionStore

        store = ActorSessionStore(name=f"store-{uuid.uuid4().hex}")
    else:
        store = open_store(ServiceSettings(redis_url=request.getfixturevalue("redis_server").url))
    yield store
    for record in await store.list():
        await store.delete(record.session_id)
    await store.close()
    if request.param == "actor":
        store.kill()


def record(session_id: str = "s1", minutes: int = 0, replica: str | None = None) -> SessionRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return SessionRecord(
        session_id=session_id,
        model="sam2.1_hiera_tiny",
        replica=replica,
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


def lease(kind: str = "restoring", holder: str = "h1", seconds: float = 30) -> Lease:
    return Lease(kind=kind, holder=holder, until=datetime.now(UTC) + timedelta(seconds=seconds))


async def test_update_changes_fields_and_ignores_unknown_sessions(store):
    await store.create(record())
    later = datetime(2026, 2, 1, tzinfo=UTC)
    updated = await store.update("s1", last_used_at=later, expires_at=later)
    assert (updated.last_used_at, updated.expires_at) == (later, later)
    assert await store.get("s1") == updated
    assert await store.update("missing", expires_at=later) is None
    assert await store.get("missing") is None


async def test_update_never_sets_the_owner_or_the_lease(store):
    await store.create(record(replica="a"))
    with pytest.raises(ValueError):
        await store.update("s1", replica="b")
    with pytest.raises(ValueError):
        await store.update("s1", lease=lease())
    assert (await store.get("s1")).replica == "a"


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


async def test_claim_sets_owner_and_lease_only_if_both_are_as_read(store):
    await store.create(record(replica="dead"))
    rebuild = lease("restoring", "rebuild-1")
    assert await store.claim("s1", ("other", None), None, rebuild) is False
    assert await store.claim("s1", ("dead", lease("propagating")), None, rebuild) is False
    assert await store.claim("s1", ("dead", None), None, rebuild)
    # a second rebuild that read the same record loses
    assert await store.claim("s1", ("dead", None), None, lease("restoring", "rebuild-2")) is False
    current = await store.get("s1")
    assert (current.replica, current.lease, current.status()) == (None, rebuild, "restoring")
    assert await store.claim("s1", (None, rebuild), "new", None)
    current = await store.get("s1")
    assert (current.replica, current.lease, current.status()) == ("new", None, "ready")
    assert await store.claim("missing", (None, None), "x", None) is False


async def test_a_renewed_lease_is_a_new_value_to_compare_against(store):
    await store.create(record(replica="a"))
    first = lease("propagating", "p1", seconds=1)
    assert await store.claim("s1", ("a", None), "a", first)
    renewed = first.model_copy(update={"until": first.until + timedelta(seconds=30)})
    assert await store.claim("s1", ("a", first), "a", renewed)
    # a writer that read the lease before its renewal cannot take it over
    assert await store.claim("s1", ("a", first), None, lease("restoring")) is False
    assert (await store.get("s1")).lease == renewed


async def test_status_comes_from_the_live_lease_and_a_lapsed_one_counts_as_none(store):
    await store.create(record(replica="a"))
    lapsed = lease("propagating", seconds=-1)
    assert await store.claim("s1", ("a", None), "a", lapsed)
    current = await store.get("s1")
    assert current.lease == lapsed and current.live_lease() is None
    assert current.status() == "ready"
    assert await store.claim("s1", ("a", lapsed), "a", lease("propagating", "p2"))
    assert (await store.get("s1")).status() == "propagating"


async def test_transition_writes_from_a_fresh_read_and_one_of_racing_writers_wins(store):
    await store.create(record(replica="dead"))

    def take(holder: str):
        def step(current: SessionRecord) -> SessionRecord | None:
            if current.live_lease() is not None:
                return None  # someone holds it
            return current.model_copy(update={"replica": None, "lease": lease(holder=holder)})

        return step

    results = await asyncio.gather(*(store.transition("s1", take(f"r{i}")) for i in range(5)))
    winners = [written.lease.holder for written, won in results if won]
    assert len(winners) == 1
    assert all(seen.lease.holder == winners[0] for seen, _ in results)
    assert (await store.get("s1")).lease.holder == winners[0]
    assert await store.transition("missing", take("x")) == (None, False)

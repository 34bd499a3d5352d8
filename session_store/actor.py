"""The embedded store: one named, detached Ray actor holding an ``InMemorySessionStore``,
shared by every ingress and SAM 2 replica of the cluster, so ``serve run`` works on one machine with
nothing else installed and sessions outlive an ingress restart (not a cluster restart)."""

from __future__ import annotations

from typing import Any

import ray

from session_store.base import SessionStore
from session_store.memory import InMemorySessionStore
from session_store.records import Lease, LogEntry, ObjectRecord, SessionRecord

ACTOR_NAME = "sam2serve-session-store"
ACTOR_NAMESPACE = "sam2serve"


@ray.remote(num_cpus=0, max_restarts=0)
class SessionStoreActor:
    """Runs store calls one at a time in its own process (an async actor, never blocking)."""

    def __init__(self) -> None:
        self._store = InMemorySessionStore()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self._store, method)(*args, **kwargs)


class ActorSessionStore(SessionStore):
    """Client of the cluster's ``SessionStoreActor``; creates it on first use."""

    def __init__(self, name: str = ACTOR_NAME) -> None:
        self._actor = SessionStoreActor.options(
            name=name, namespace=ACTOR_NAMESPACE, lifetime="detached", get_if_exists=True
        ).remote()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._actor.call.remote(method, *args, **kwargs)

    async def create(self, record: SessionRecord) -> bool:
        return await self._call("create", record)

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self._call("get", session_id)

    async def list(self) -> list[SessionRecord]:
        return await self._call("list")

    async def update(self, session_id: str, **changes: Any) -> SessionRecord | None:
        return await self._call("update", session_id, **changes)

    async def claim(
        self,
        session_id: str,
        expected: tuple[str | None, Lease | None],
        replica: str | None,
        lease: Lease | None,
    ) -> bool:
        return await self._call("claim", session_id, expected, replica, lease)

    async def delete(self, session_id: str) -> bool:
        return await self._call("delete", session_id)

    async def put_object(self, session_id: str, obj: ObjectRecord) -> None:
        await self._call("put_object", session_id, obj)

    async def delete_object(self, session_id: str, obj_id: int) -> None:
        await self._call("delete_object", session_id, obj_id)

    async def objects(self, session_id: str) -> list[ObjectRecord]:
        return await self._call("objects", session_id)

    async def append_log(self, session_id: str, entry: LogEntry) -> None:
        await self._call("append_log", session_id, entry)

    async def log(self, session_id: str) -> list[LogEntry]:
        return await self._call("log", session_id)

    async def clear(self, session_id: str) -> None:
        await self._call("clear", session_id)

    def kill(self) -> None:
        """Remove the actor and everything in it (tests, teardown)."""
        ray.kill(self._actor)

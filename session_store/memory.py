"""``InMemorySessionStore``: dictionaries in one process. Served to every ingress and SAM 2
replica of a cluster by ``SessionStoreActor``; on its own, for single-process use. Each method
runs without awaiting, so on one event loop it is atomic (the compare-and-set included)."""

from __future__ import annotations

from typing import Any

from session_store.base import SessionStore, check_unclaimed
from session_store.records import Lease, LogEntry, ObjectRecord, SessionRecord


class InMemorySessionStore(SessionStore):
    def __init__(self) -> None:
        self._sessions: dict[str, SessionRecord] = {}
        self._objects: dict[str, dict[int, ObjectRecord]] = {}
        self._logs: dict[str, list[LogEntry]] = {}

    async def create(self, record: SessionRecord) -> bool:
        if record.session_id in self._sessions:
            return False
        self._sessions[record.session_id] = record.model_copy()
        self._objects[record.session_id] = {}
        self._logs[record.session_id] = []
        return True

    async def get(self, session_id: str) -> SessionRecord | None:
        record = self._sessions.get(session_id)
        return record.model_copy() if record else None

    async def list(self) -> list[SessionRecord]:
        return sorted((r.model_copy() for r in self._sessions.values()), key=lambda r: r.created_at)

    async def update(self, session_id: str, **changes: Any) -> SessionRecord | None:
        check_unclaimed(changes)
        record = self._sessions.get(session_id)
        if record is None:
            return None
        updated = record.model_validate(record.model_dump() | changes)
        self._sessions[session_id] = updated
        return updated.model_copy()

    async def claim(
        self,
        session_id: str,
        expected: tuple[str | None, Lease | None],
        replica: str | None,
        lease: Lease | None,
    ) -> bool:
        record = self._sessions.get(session_id)
        if record is None or (record.replica, record.lease) != expected:
            return False
        self._sessions[session_id] = record.model_copy(update={"replica": replica, "lease": lease})
        return True

    async def delete(self, session_id: str) -> bool:
        self._objects.pop(session_id, None)
        self._logs.pop(session_id, None)
        return self._sessions.pop(session_id, None) is not None

    async def put_object(self, session_id: str, obj: ObjectRecord) -> None:
        if session_id in self._objects:
            self._objects[session_id][obj.obj_id] = obj.model_copy()

    async def delete_object(self, session_id: str, obj_id: int) -> None:
        self._objects.get(session_id, {}).pop(obj_id, None)

    async def objects(self, session_id: str) -> list[ObjectRecord]:
        objects = self._objects.get(session_id, {})
        return [objects[k].model_copy() for k in sorted(objects)]

    async def append_log(self, session_id: str, entry: LogEntry) -> None:
        if session_id in self._logs:
            self._logs[session_id].append(entry)

    async def log(self, session_id: str) -> list[LogEntry]:
        return list(self._logs.get(session_id, []))

    async def clear(self, session_id: str) -> None:
        if session_id in self._sessions:
            self._objects[session_id] = {}
            self._logs[session_id] = []

"""``SessionStore``: the storage interface the ingress uses. Implementations: Redis
(production), an in-memory store (one process) served to a whole Ray cluster by a named actor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from session_store.records import LogEntry, ObjectRecord, SessionRecord, SessionStatus


class SessionStore(ABC):
    """Async key-value storage of sessions, their objects and their prompt logs.

    Methods on an unknown session return None / False / empty rather than raising: the caller
    decides what a missing session means.
    """

    @abstractmethod
    async def create(self, record: SessionRecord) -> bool:
        """Store a new session; False if the id is taken."""

    @abstractmethod
    async def get(self, session_id: str) -> SessionRecord | None: ...

    @abstractmethod
    async def list(self) -> list[SessionRecord]:
        """Every session, oldest first."""

    @abstractmethod
    async def update(self, session_id: str, **changes: Any) -> SessionRecord | None:
        """Change some fields of a session; the updated record, or None if unknown."""

    @abstractmethod
    async def claim(
        self, session_id: str, expected: str | None, replica: str | None, status: SessionStatus
    ) -> bool:
        """Compare-and-set of the owner lease: set ``replica`` and ``status`` only if the owner is
        still ``expected``. Two rebuilds of one session never both win."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove a session with its objects and log; False if unknown."""

    @abstractmethod
    async def put_object(self, session_id: str, obj: ObjectRecord) -> None: ...

    @abstractmethod
    async def delete_object(self, session_id: str, obj_id: int) -> None: ...

    @abstractmethod
    async def objects(self, session_id: str) -> list[ObjectRecord]:
        """The session's objects by id."""

    @abstractmethod
    async def append_log(self, session_id: str, entry: LogEntry) -> None:
        """Append one applied operation (prompt, clear, remove, reset) to the prompt log."""

    @abstractmethod
    async def log(self, session_id: str) -> list[LogEntry]:
        """The prompt log in the order it was applied."""

    @abstractmethod
    async def clear(self, session_id: str) -> None:
        """Forget the session's objects and prompt log (a reset)."""

    async def ping(self) -> bool:
        """Whether the store answers."""
        return True

    async def close(self) -> None:  # noqa: B027 (optional hook, nothing to release by default)
        """Release connections."""

"""``SessionStore``: the storage interface of the ingress (records, objects, leases) and the
replicas (the prompt log they append, the owners they check). Implementations: Redis
(production), an in-memory store (one process) served to a whole Ray cluster by a named actor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from session_store.records import Lease, LogEntry, ObjectRecord, SessionRecord

# Fields only ``claim`` may change: every change of owner or lease is a compare-and-set.
_CLAIMED_FIELDS = frozenset({"replica", "lease"})
# Read-compare-set rounds ``transition`` tries before it gives up on a hot record.
_TRANSITION_TRIES = 8


class StoreError(Exception):
    """The store's backend failed (unreachable, timed out, refused the command): the call may
    succeed later. ``kind`` names the backend's error class. The session store raises this
    rather than its client library's errors, so callers depend on the store, not on Redis: the
    ingress answers it as the contract's ``StoreUnavailableError`` (503 with Retry-After)."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


def check_unclaimed(changes: dict[str, Any]) -> None:
    """``update`` never sets the owner or the lease: ValueError."""
    if _CLAIMED_FIELDS & changes.keys():
        raise ValueError("owner and lease change only by compare-and-set (claim)")


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
        """Change some fields of a session (never ``replica`` or ``lease``: ValueError); the
        updated record, or None if unknown."""

    @abstractmethod
    async def claim(
        self,
        session_id: str,
        expected: tuple[str | None, Lease | None],
        replica: str | None,
        lease: Lease | None,
    ) -> bool:
        """Compare-and-set of the owner and the lease: set ``replica`` and ``lease`` only if both
        are still exactly ``expected`` (as the caller read them). Of two writers that read the
        same record, one wins; False for the other and for an unknown session."""

    async def transition(
        self, session_id: str, step: Callable[[SessionRecord], SessionRecord | None]
    ) -> tuple[SessionRecord | None, bool]:
        """Read the record, let ``step`` decide its new owner and lease (None: leave it), and
        write them by compare-and-set, again from a fresh read while other writers interleave.
        Returns the record as last read (None if unknown) or as written, and whether ``step``'s
        change was written (not after a few rounds lost to other writers). ``step`` may raise
        to refuse."""
        record = None
        for _ in range(_TRANSITION_TRIES):
            record = await self.get(session_id)
            if record is None:
                return None, False
            changed = step(record)
            if changed is None:
                return record, False
            expected = (record.replica, record.lease)
            if await self.claim(session_id, expected, changed.replica, changed.lease):
                return changed, True
        return record, False

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
        """Append one applied operation (prompt, clear, remove, reset) to the prompt log, as
        one atomic step: nothing is appended to a deleted session."""

    @abstractmethod
    async def log(self, session_id: str) -> list[LogEntry]:
        """The prompt log in the order it was appended (entries keep any keys they carry)."""

    @abstractmethod
    async def clear(self, session_id: str) -> None:
        """Forget the session's objects and prompt log (a reset)."""

    async def ping(self) -> bool:
        """Whether the store answers."""
        return True

    async def close(self) -> None:  # noqa: B027 (optional hook, nothing to release by default)
        """Release connections."""

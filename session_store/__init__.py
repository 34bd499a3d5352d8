"""Session storage: metadata, objects and prompt log of every session. Storage only."""

from session_store.base import SessionStore
from session_store.records import Lease, LogEntry, ObjectRecord, SessionRecord, SessionStatus


def open_store(redis_url: str | None) -> SessionStore:
    """Redis when ``redis_url`` is given, else the cluster's embedded actor store."""
    if redis_url:
        from session_store.redis_store import RedisSessionStore

        return RedisSessionStore(redis_url)
    from session_store.actor import ActorSessionStore

    return ActorSessionStore()


__all__ = [
    "Lease",
    "LogEntry",
    "ObjectRecord",
    "SessionRecord",
    "SessionStatus",
    "SessionStore",
    "open_store",
]

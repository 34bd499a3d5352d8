"""Session storage: metadata, objects and prompt log of every session. Storage only."""

from typing import Protocol

from session_store.base import SessionStore, StoreError
from session_store.records import Lease, LogEntry, ObjectRecord, SessionRecord, SessionStatus


class StoreConfig(Protocol):
    """What opening a store reads of the service's settings (``ServiceSettings`` has it all;
    this package does not import the settings model)."""

    redis_url: str | None
    redis_retries: int
    redis_retry_base_s: float
    redis_retry_cap_s: float


def open_store(config: StoreConfig) -> SessionStore:
    """Redis when ``config.redis_url`` is given, else the cluster's embedded actor store."""
    if config.redis_url:
        from session_store.redis_store import RedisSessionStore

        return RedisSessionStore(
            config.redis_url,
            retries=config.redis_retries,
            retry_base_s=config.redis_retry_base_s,
            retry_cap_s=config.redis_retry_cap_s,
        )
    from session_store.actor import ActorSessionStore

    return ActorSessionStore()


__all__ = [
    "Lease",
    "LogEntry",
    "ObjectRecord",
    "SessionRecord",
    "SessionStatus",
    "SessionStore",
    "StoreConfig",
    "StoreError",
    "open_store",
]

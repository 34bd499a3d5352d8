"""Session expiry: sessions idle past ``session_ttl_s`` are removed (replica state, directory,
store keys), every ``expiry_check_s``, by the ingress's lifespan task.

Expiry counts idle time. A request renews the TTL (``touch``) once the session's owner is known,
so retries answered 503 while it is rebuilt do not keep it alive; a propagation renews it while
frames flow. A session under a live lease (a rebuild or a propagation under way) is skipped; a
lease left by a dead holder lapses, and the session can expire again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from deployments.protocol import NotFoundError, ServiceSettings
from session_store import SessionRecord, SessionStore

logger = logging.getLogger("ray.serve")


class Expiry:
    """The TTL of the sessions in ``store``."""

    def __init__(self, store: SessionStore, settings: ServiceSettings) -> None:
        self.store = store
        self.settings = settings

    async def touch(self, record: SessionRecord) -> None:
        """The session was used now: it expires ``session_ttl_s`` from now."""
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.settings.session_ttl_s)
        await self.store.update(record.session_id, last_used_at=now, expires_at=expires)
        record.last_used_at, record.expires_at = now, expires

    async def expire(self, delete: Callable[[str], Awaitable[None]]) -> list[str]:
        """``delete`` every session whose ``expires_at`` has passed, unless a live lease holds
        it; their ids."""
        now = datetime.now(UTC)
        expired = [
            r.session_id
            for r in await self.store.list()
            if r.expires_at <= now and r.live_lease(now) is None
        ]
        for session_id in expired:
            with contextlib.suppress(NotFoundError):
                await delete(session_id)
        return expired

    async def expire_forever(self, delete: Callable[[str], Awaitable[None]]) -> None:
        """``expire`` every ``expiry_check_s``, for the ingress's lifetime."""
        while True:
            await asyncio.sleep(self.settings.expiry_check_s)
            try:
                await self.expire(delete)
            except Exception:  # the store may be restarting: try again next round
                logger.exception("expiring sessions failed")

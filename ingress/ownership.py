"""Which replica holds a session: calls to the owner, and rebuilds when the owner is gone.

The owner is the replica id in the session's store record. A call goes to it through the
session router; when it is gone (crash, kill, downscale) the session is rebuilt on the replica
with the most free slots under a rebuild lease, and the call is retried there. Copies of a
session that no caller will use (a create that timed out, a rebuild that lost its lease) are
freed on their replicas in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from ray.serve.handle import DeploymentHandle

from deployments.protocol import (
    EngineError,
    NotFoundError,
    ReplicaApi,
    ServiceSettings,
    SessionUnavailableError,
)
from ingress.expiry import Expiry
from ingress.health import replica_stats
from ingress.replica_calls import replica_api
from session_store import Lease, SessionRecord, SessionStore, leases

R = TypeVar("R")
# A call to a session's owner: given the replicas and the owner's id, the replica's answer.
OwnerCall = Callable[[ReplicaApi, str], Awaitable[R]]

logger = logging.getLogger("ray.serve")
# Requests to free copies of sessions no caller will use, kept until they finish.
_freeing: set[asyncio.Task[None]] = set()


class Ownership:
    """Owner lookup, calls to the owner, rebuild leases, and freeing abandoned copies."""

    def __init__(
        self,
        replicas: DeploymentHandle,
        store: SessionStore,
        settings: ServiceSettings,
        expiry: Expiry,
    ) -> None:
        self.replicas = replicas
        self.store = store
        self.settings = settings
        self.expiry = expiry

    def replica_api(self, timeout_s: float | None = None) -> ReplicaApi:
        """The replicas, each call within ``timeout_s`` (default: ``request_timeout_s``)."""
        return replica_api(self.replicas, timeout_s or self.settings.request_timeout_s)

    async def call(
        self,
        record: SessionRecord,
        call: OwnerCall[R],
        *,
        touch: bool = True,
        rebuild: bool = True,
        timeout_s: float | None = None,
    ) -> R:
        """``call`` the session's owner within the request's time budget. When the owner is
        gone, the session is first rebuilt on another replica (``rebuild``), unless the caller
        only wants to know."""
        owner = await self.owner(record) if rebuild else record.replica
        if touch:  # after the owner is known: a 503 while rebuilding does not extend the TTL
            await self.expiry.touch(record)
        replicas = self.replica_api(timeout_s)
        try:
            return await call(replicas, _known(record, owner))
        except SessionUnavailableError:
            if not rebuild:
                raise
            owner = await self.rebuild(record, lost=owner)
            return await call(replicas, owner)

    async def owner(self, record: SessionRecord) -> str:
        """The live owner's id; a session left without one is rebuilt first."""
        if record.replica is not None:
            return record.replica
        if record.status() == "restoring":
            raise SessionUnavailableError("the session is being restored; retry shortly")
        return await self.rebuild(record, lost=None)

    async def rebuild(self, record: SessionRecord, lost: str | None) -> str:
        """Rebuild the session on the replica with the most free slots: frames and masks from
        the shared storage, the prompt log replayed; the new owner. A rebuild lease, taken by
        compare-and-set and bounded by the rebuild's time budget, lets one rebuild win; requests
        meanwhile get 503 with Retry-After, and a rebuilder that dies leaves a lease that
        lapses."""
        session_id = record.session_id
        lease = leases.new_lease("restoring", self.settings.create_timeout_s)
        current, won = await self.store.transition(session_id, leases.take_rebuild(lost, lease))
        if not won:
            if current is not None and current.replica not in (None, lost):
                record.replica = current.replica  # another request rebuilt it meanwhile
                return current.replica
            raise lease_lost(session_id, current, "the session is being restored; retry shortly")
        try:
            names = {o.obj_id: (o.name, o.category) for o in await self.store.objects(session_id)}
            log = await self.store.log(session_id)
            budget_s = (lease.until - datetime.now(UTC)).total_seconds()
            replica = await replica_api(self.replicas, budget_s).rebuild_session(
                session_id=session_id, log=log, names=names
            )
        except BaseException:
            await self.release(session_id, lease)
            raise
        current, owned = await self.store.transition(
            session_id, leases.finish_rebuild(lease, replica)
        )
        if not owned:
            self.free_later(session_id, [replica])
            raise lease_lost(session_id, current, "the rebuild outlived its lease; retry")
        record.replica, record.lease = replica, None
        return replica

    async def release(self, session_id: str, lease: Lease) -> None:
        """Give a lease back at once; if the store cannot take it now, the lease lapses."""
        try:
            await self.store.transition(session_id, leases.release(lease))
        except Exception:
            logger.warning(
                "could not release the %s lease of %s", lease.kind, session_id, exc_info=True
            )

    def free_later(self, session_id: str, replicas: list[str] | None = None) -> None:
        """Ask ``replicas`` (default: every replica) to free their copy of a session no caller
        will use, in the background. Best effort: their reconciliation frees it anyway."""
        task = asyncio.create_task(self._free(session_id, replicas))
        _freeing.add(task)
        task.add_done_callback(_freeing.discard)

    async def _free(self, session_id: str, replicas: list[str] | None) -> None:
        budget_s = self.settings.request_timeout_s  # also bounds waiting for a late create
        try:
            if replicas is None:
                stats = await replica_stats(self.replicas, budget_s)
                replicas = [s["replica"] for s in stats if "replica" in s]
            api = replica_api(self.replicas, budget_s)
            answers = await asyncio.gather(
                *(api.settle_session(session_id=session_id, owner=owner) for owner in replicas),
                return_exceptions=True,
            )
        except Exception:
            logger.warning(
                "could not ask the replicas to free session %s", session_id, exc_info=True
            )
            return
        for owner, answer in zip(replicas, answers, strict=True):
            # A replica gone or slow (a project error) frees its copy by reconciliation anyway.
            if isinstance(answer, Exception) and not isinstance(answer, EngineError):
                logger.warning(
                    "replica %s could not free session %s", owner, session_id, exc_info=answer
                )


def lease_lost(
    session_id: str, current: SessionRecord | None, message: str = "the session moved; retry"
) -> Exception:
    """The error for a lease not taken: the session is gone (404) or held elsewhere (503)."""
    if current is None:
        return NotFoundError(f"session {session_id} not found", session_id=session_id)
    return SessionUnavailableError(message)


def _known(record: SessionRecord, owner: str | None) -> str:
    if owner is None:
        raise SessionUnavailableError(f"session {record.session_id} has no replica")
    return owner

"""The changes of a session's owner and lease, as steps for ``SessionStore.transition``: pure
functions of the record as read, each written by one compare-and-set, so of two racing
requests one wins. A step returns the record to write, or None to leave it (a refusal)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from session_store.records import Lease, SessionRecord

Step = Callable[[SessionRecord], SessionRecord | None]


def new_lease(kind: Literal["restoring", "propagating"], seconds: float) -> Lease:
    """A lease for a new holder, live for ``seconds`` from now."""
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    return Lease(kind=kind, holder=secrets.token_urlsafe(12), until=until)


def renewed(lease: Lease, seconds: float) -> Lease:
    """The same holder's lease, live for ``seconds`` from now."""
    return lease.model_copy(update={"until": datetime.now(UTC) + timedelta(seconds=seconds)})


def take_rebuild(lost: str | None, lease: Lease) -> Step:
    """Leave the session ownerless under a rebuild lease: only while its owner is still
    ``lost`` and no live rebuild holds it. A propagation's lease gives way (its replica is
    gone, and the stream with it)."""

    def step(record: SessionRecord) -> SessionRecord | None:
        live = record.live_lease()
        if record.replica != lost or (live is not None and live.kind == "restoring"):
            return None
        return record.model_copy(update={"replica": None, "lease": lease})

    return step


def finish_rebuild(lease: Lease, replica: str) -> Step:
    """Hand the session to the replica that rebuilt it, while the rebuild's lease is live: one
    that lapsed may have been taken by another rebuild."""

    def step(record: SessionRecord) -> SessionRecord | None:
        if record.live_lease() != lease:
            return None
        return record.model_copy(update={"replica": replica, "lease": None})

    return step


def take_propagation(owner: str, lease: Lease) -> Step:
    """The propagation lease, while ``owner`` still owns the session. The owner runs one
    propagation per session, so once it accepted this one, any other propagation's lease is
    stale and is replaced."""

    def step(record: SessionRecord) -> SessionRecord | None:
        if record.replica != owner:
            return None
        return record.model_copy(update={"lease": lease})

    return step


def extend(lease: Lease, owner: str) -> Step:
    """Renew a propagation's lease to ``lease`` (same holder, later ``until``), taking it again
    if it lapsed; unless the session moved or another live lease holds it now."""

    def step(record: SessionRecord) -> SessionRecord | None:
        live = record.live_lease()
        if record.replica != owner or (live is not None and live.holder != lease.holder):
            return None
        return record.model_copy(update={"lease": lease})

    return step


def release(lease: Lease) -> Step:
    """Drop the lease if its holder still has it (live or lapsed); the owner stays."""

    def step(record: SessionRecord) -> SessionRecord | None:
        if record.lease is None or record.lease.holder != lease.holder:
            return None
        return record.model_copy(update={"lease": None})

    return step

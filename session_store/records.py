"""What the session store keeps: everything needed to list a session and, later, to rebuild it
on another replica (video info and options, owner, lease, objects, the ordered prompt log)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

SessionStatus = Literal["ready", "restoring", "propagating"]


class Lease(BaseModel):
    """A time-bounded hold on a session: a rebuild (``restoring``) or a propagation
    (``propagating``). Its holder renews or releases it; a holder that dies leaves it to lapse
    at ``until``, so no flag outlives the request that set it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["restoring", "propagating"]
    holder: str = Field(description="Random token of the request that holds it.")
    until: datetime

    def live(self, now: datetime) -> bool:
        return now < self.until


class SessionRecord(BaseModel):
    """A session's metadata. ``video`` and ``options`` are stored as the engine gave them.
    ``replica`` and ``lease`` change only by compare-and-set (``SessionStore.claim``)."""

    session_id: str
    model: str
    replica: str | None = Field(None, description="Unique id of the owning replica.")
    lease: Lease | None = None
    creator_key: str | None = Field(
        None,
        # Records written before the rename (``owner`` is the replica) still read.
        validation_alias=AliasChoices("creator_key", "owner_key"),
        description="Hash of the API key that created it.",
    )
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    video: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)

    def live_lease(self, now: datetime | None = None) -> Lease | None:
        """The lease, unless it has lapsed."""
        if self.lease is None or not self.lease.live(now or datetime.now(UTC)):
            return None
        return self.lease

    def status(self, now: datetime | None = None) -> SessionStatus:
        """The contract's status: the kind of the live lease, else ready."""
        lease = self.live_lease(now)
        return lease.kind if lease else "ready"


class ObjectRecord(BaseModel):
    obj_id: int
    name: str | None = None
    category: str | None = None


LogEntry = dict[str, Any]

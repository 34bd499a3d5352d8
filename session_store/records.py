"""What the session store keeps: everything needed to list a session and, later, to rebuild it
on another replica (video info and options, owner, status, objects, the ordered prompt log)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

SessionStatus = Literal["ready", "restoring", "propagating"]


class SessionRecord(BaseModel):
    """A session's metadata. ``video`` and ``options`` are stored as the engine gave them."""

    session_id: str
    status: SessionStatus = "ready"
    model: str
    replica: str | None = Field(None, description="Unique id of the owning replica.")
    owner_key: str | None = Field(None, description="Hash of the API key that created it.")
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    video: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)


class ObjectRecord(BaseModel):
    obj_id: int
    name: str | None = None
    category: str | None = None


LogEntry = dict[str, Any]

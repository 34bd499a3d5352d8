"""Autoscaling of the SAM 2 replicas on active sessions (a Serve custom autoscaling policy).

Target = ceil((active sessions + spare slots) / max_sessions): every session has a slot and
``spare_slots`` more wait ready for the next user; never fewer replicas than the active
sessions need. Serve then applies min/max replicas and the up/down delays.
"""

from __future__ import annotations

import math
from typing import Any

from ray.serve.config import AutoscalingContext

ACTIVE_SESSIONS = "active_sessions"


def replicas_for(active_sessions: float, max_sessions: int, spare_slots: int) -> int:
    """Replicas for these sessions plus the spare slots (pure, for tests)."""
    needed = math.ceil(active_sessions / max_sessions)
    return max(needed, math.ceil((active_sessions + spare_slots) / max_sessions), 1)


class SessionSlotsPolicy:
    """Instantiated once by Serve's controller with the policy kwargs, called every tick."""

    def __init__(self, max_sessions: int, spare_slots: int) -> None:
        self.max_sessions = max_sessions
        self.spare_slots = spare_slots

    def __call__(self, ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        per_replica = ctx.aggregated_metrics.get(ACTIVE_SESSIONS, {})
        active = math.ceil(sum(per_replica.values()))
        return replicas_for(active, self.max_sessions, self.spare_slots), {ACTIVE_SESSIONS: active}

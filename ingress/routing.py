"""``SessionRouter``: strict session affinity for the SAM 2 replicas (a Ray Serve
``RequestRouter``, configured on the replica deployment with ``request_router_config``).

- ``create_session`` (and the one-shot ``segment_image`` and ``track``, which hold a session
  slot while they run) goes to the replica with the most free session slots (from the replicas'
  ``record_routing_stats``, minus sessions this router placed that the stats do not show yet).
  Stats lag by up to a period, so the replica itself has the last word on capacity: a full
  one refuses with ``CapacityError`` (503) at once.
- A call with ``owner=<replica id>`` (the owner the ingress read from the session store) goes to
  that replica and never elsewhere; it waits while the replica is busy, and fails at once with
  ``SessionUnavailableError`` when the replica is gone.
- Any other call may go to any replica.

This class uses Ray Serve's public request-router API only. The two private members it needs
(a chosen replica handed to exactly its request; a request failed at once) are behind
``ingress.router_adapter``, which says why.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica

from deployments.protocol import PLACEMENT_METHODS, SessionUnavailableError
from ingress.router_adapter import ExactRequestRouter


class SessionRouter(ExactRequestRouter):
    """Routes by session owner; places new sessions by free slots."""

    def initialize_state(self, placement_grace_s: float, **_: Any) -> None:
        """``request_router_kwargs`` (``deployments/app.py``): the ``placement_grace_s`` setting."""
        self._placement_grace_s = placement_grace_s
        # session id -> (replica, when): placed here, maybe not in the replica's stats yet
        self._placed: dict[str, tuple[ReplicaID, float]] = {}
        self.register()

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        request = pending_request
        if request is None or not candidate_replicas:
            return [candidate_replicas]
        if request.metadata.call_method in PLACEMENT_METHODS:
            ranks = self._place(request, candidate_replicas)
        elif (owner := request.kwargs.get("owner")) is None:
            return [candidate_replicas]
        else:
            ranks = self._owner(request, owner, candidate_replicas)
        # One replica fits, so a busy one is polled with Ray's backoff, not in a tight loop.
        request.routing_context.should_backoff = True
        return ranks

    def replica_stats(self) -> list[dict[str, Any]]:
        """The latest stats each running replica published (for /health)."""
        return [dict(r.routing_stats or {}) for r in self.curr_replicas.values()]

    def _owner(
        self, request: PendingRequest, owner: str, candidates: list[RunningReplica]
    ) -> list[list[RunningReplica]]:
        replica = next((r for r in candidates if r.replica_id.unique_id == owner), None)
        if replica is not None:
            return [[replica]]
        self.fail(
            request,
            SessionUnavailableError(
                f"the replica holding session {request.kwargs.get('session_id')} is gone",
                replica=owner,
            ),
        )
        return [candidates[:1]]  # a non-empty rank makes the routing loop see the done future

    def _place(
        self, request: PendingRequest, candidates: list[RunningReplica]
    ) -> list[list[RunningReplica]]:
        best = max(candidates, key=lambda r: (self._free_slots(r), r.replica_id.unique_id))
        self._placed[request.kwargs["session_id"]] = (best.replica_id, time.monotonic())
        return [[best]]

    def _free_slots(self, replica: RunningReplica) -> int:
        """Free slots the replica reported, less sessions placed on it since that report."""
        stats = replica.routing_stats or {}
        reported, now = set(stats.get("sessions", ())), time.monotonic()
        for session_id, (_, when) in list(self._placed.items()):
            if session_id in reported or now - when > self._placement_grace_s:
                del self._placed[session_id]
        unseen = sum(1 for rid, _ in self._placed.values() if rid == replica.replica_id)
        return stats.get("free_slots", 0) - unseen  # no stats yet: count as full

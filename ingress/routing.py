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

Relies on two private parts of Ray Serve 2.60's ``RequestRouter`` (pinned in pyproject):
``_remove_pending_request_from_indices`` to fail a request fast, and
``_fulfill_next_pending_request``, overridden because the base class matches a chosen replica
to a request by the parent HTTP request's id, which concurrent sibling calls share.
"""

from __future__ import annotations

import importlib
import time
import weakref
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from deployments.protocol import PLACEMENT_METHODS, EngineError, SessionUnavailableError

# The routers of this process, for /health. Serve pickles the router class by value, so the
# class that runs is a copy: it registers itself here through the imported module.
live_routers: weakref.WeakSet[RequestRouter] = weakref.WeakSet()


class SessionRouter(RequestRouter):
    """Routes by session owner; places new sessions by free slots."""

    def initialize_state(self, placement_grace_s: float = 2.0, **_: Any) -> None:
        self._placement_grace_s = placement_grace_s
        # session id -> (replica, when): placed here, maybe not in the replica's stats yet
        self._placed: dict[str, tuple[ReplicaID, float]] = {}
        importlib.import_module(__name__).live_routers.add(self)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        request = pending_request
        if request is None or not candidate_replicas:
            return [candidate_replicas]
        if request.metadata.call_method in PLACEMENT_METHODS:
            return self._place(request, candidate_replicas)
        owner = request.kwargs.get("owner")
        if owner is None:
            return [candidate_replicas]
        replica = next((r for r in candidate_replicas if r.replica_id.unique_id == owner), None)
        if replica is None:
            return self._fail(
                request,
                SessionUnavailableError(
                    f"the replica holding session {request.kwargs.get('session_id')} is gone",
                    replica=owner,
                ),
                candidate_replicas,
            )
        return [[replica]]

    def replica_stats(self) -> list[dict[str, Any]]:
        """The latest stats each running replica published (for /health)."""
        return [dict(r.routing_stats or {}) for r in self._replicas.values()]

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

    def _fail(
        self, request: PendingRequest, error: EngineError, candidates: list[RunningReplica]
    ) -> list[list[RunningReplica]]:
        """Fail the caller's request now instead of letting it wait for a replica."""
        if not request.future.done():
            request.future.set_exception(error)
        self._remove_pending_request_from_indices(request)
        return [candidates[:1]]  # a non-empty rank makes the routing loop see the done future

    def _fulfill_next_pending_request(
        self, replica: RunningReplica, request_metadata: Any = None
    ) -> None:
        """Hand the replica to exactly the request it was chosen for."""
        for request in self._pending_requests_to_fulfill:
            if request.metadata is request_metadata and not request.future.done():
                self._record_queue_wait_time(request)
                request.future.set_result(replica)
                self._remove_pending_request_from_indices(request)
                return

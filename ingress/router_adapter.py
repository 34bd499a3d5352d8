"""The session router's one adapter over Ray Serve's private ``RequestRouter`` members.

``SessionRouter`` (``ingress/routing.py``) uses Ray Serve's public request-router API only:
``choose_replicas``, ``initialize_state``, ``curr_replicas`` and the ``PendingRequest`` and
``RunningReplica`` fields. Two things it needs have no public API in Ray 2.60 (pinned in
pyproject), and live here, in this class and nowhere else:

1. **A chosen replica goes to the request it was chosen for.** Once ``choose_replicas`` has
   ranked the replicas and one has room, the base class hands it to the pending request with
   the same ``internal_request_id``. Every handle call made while serving one HTTP request
   carries that request's id, so sibling calls in flight together share it (``GET
   /api/v1/sessions`` asks each session's owner at once, each owner a different replica): the
   base class indexes the first sibling only, hands it whichever sibling's replica comes first,
   and leaves the others unmatched. ``_fulfill_next_pending_request`` is overridden to match
   the request object itself. It keeps the base class's bookkeeping, through the four private
   members Ray's public ``FIFOMixin`` (which overrides the same method) declares it relies on:
   ``_pending_requests_to_fulfill``, ``_cancel_routing_task_for_pending_request``,
   ``_record_queue_wait_time`` and ``_remove_pending_request_from_indices``.
2. **A request fails at once** when its owner is gone (``fail``): ``PendingRequest.future`` is
   public, the base class's index of pending requests is not, and a failed request left in it
   would stay there.

``PRIVATE_MEMBERS`` names them all; ``tests/api/test_router_adapter.py`` is the canary that
checks their signatures and runs the base class's own routing loop over stand-in replicas, so
a Ray upgrade that changes any of them fails there, by name.

``live_routers`` is the other gap: the service reads the replicas' latest stats (``/health``,
``/api/v1/models``) from the routers of its process, and Serve offers no public way to reach
the router behind a handle. ``handle.broadcast`` (alpha) would ask every replica instead, an
RPC per replica per health probe that Ray documents as not for frequent use, whose collection
fails whole when one replica is slow. Serve pickles the module that defines the router class by
value (``RequestRouterConfig`` registers it with cloudpickle), so a set kept there would be a
copy; this module is imported by reference, so the router that runs and the service share it.
"""

from __future__ import annotations

import weakref
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

# The private members of Ray's RequestRouter that this module uses or overrides.
PRIVATE_MEMBERS = (
    "_fulfill_next_pending_request",
    "_pending_requests_to_fulfill",
    "_cancel_routing_task_for_pending_request",
    "_record_queue_wait_time",
    "_remove_pending_request_from_indices",
)

# The session routers of this process, for /health (see the module's docstring).
live_routers: weakref.WeakSet[RequestRouter] = weakref.WeakSet()


class ExactRequestRouter(RequestRouter):
    """A ``RequestRouter`` whose chosen replica goes to exactly the request it was chosen
    for, and which can fail a request at once."""

    def register(self) -> None:
        """Make this router's replica stats readable by the service of this process."""
        live_routers.add(self)

    def fail(self, request: PendingRequest, error: BaseException) -> None:
        """Fail the caller's request now instead of letting it wait for a replica."""
        if not request.future.done():
            request.future.set_exception(error)
        self._remove_pending_request_from_indices(request)

    def _fulfill_next_pending_request(
        self, replica: RunningReplica, request_metadata: Any = None
    ) -> None:
        """Hand the replica to the request it was chosen for (the one whose metadata the
        routing task passes), with the base class's bookkeeping."""
        for request in self._pending_requests_to_fulfill:
            if request.metadata is request_metadata and not request.future.done():
                self._cancel_routing_task_for_pending_request(request)
                self._record_queue_wait_time(request)
                request.future.set_result(replica)
                self._remove_pending_request_from_indices(request)
                return

"""The canary for ``ingress.router_adapter``: the private members of Ray Serve's
``RequestRouter`` it relies on keep their shape, and Ray's own routing loop, run here over
stand-in replicas, still hands the session router's choices to the right requests.

A failure here after a Ray upgrade means the adapter needs a look before anything ships: the
session router would misroute or hang requests, not fail loudly. The last test says when Ray
no longer needs the adapter's override."""

from __future__ import annotations

import asyncio
import inspect
from collections import deque

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata
from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter

from deployments.protocol import ServiceSettings, SessionUnavailableError
from ingress import router_adapter
from ingress.routing import SessionRouter

DEPLOYMENT = DeploymentID(name="SAM2Replica", app_name="test")

# name -> the parameters the adapter calls it with (after self)
SIGNATURES = {
    "_fulfill_next_pending_request": ["replica", "request_metadata"],
    "_cancel_routing_task_for_pending_request": ["pending_request"],
    "_record_queue_wait_time": ["pending_request"],
    "_remove_pending_request_from_indices": ["pending_request"],
}


class StandIn:
    """What Ray's routing loop reads of a running replica."""

    def __init__(self, unique_id: str, free_slots: int = 1) -> None:
        self.replica_id = ReplicaID(unique_id=unique_id, deployment_id=DEPLOYMENT)
        self.routing_stats = {"replica": unique_id, "free_slots": free_slots, "sessions": []}
        self.max_ongoing_requests = 8
        self.multiplexed_model_ids: set[str] = set()
        self.node_id = "node"
        self.availability_zone = None

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return 0


def make_router(cls: type[RequestRouter], replicas: list[StandIn]) -> RequestRouter:
    router = cls(deployment_id=DEPLOYMENT, handle_source=DeploymentHandleSource.REPLICA)
    router.initialize_state(placement_grace_s=ServiceSettings().placement_grace_s)
    router.update_replicas(replicas)
    return router


def pending(method: str, http_request: str = "http-1", **kwargs: str) -> PendingRequest:
    """A handle call made while serving the HTTP request ``http_request``."""
    metadata = RequestMetadata(
        request_id=http_request, internal_request_id=http_request, call_method=method
    )
    return PendingRequest(args=[], kwargs=kwargs, metadata=metadata)


async def route(router: RequestRouter, *requests: PendingRequest) -> list[object]:
    """Route the requests at once, as Serve's router does (its entry point into the
    request router); each one's replica id, or its exception."""
    results = await asyncio.wait_for(
        asyncio.gather(
            *(router._choose_replica_for_request(r) for r in requests), return_exceptions=True
        ),
        timeout=5,
    )
    return [r if isinstance(r, BaseException) else r.replica_id.unique_id for r in results]


async def test_the_private_members_keep_their_shape():
    missing = [name for name in router_adapter.PRIVATE_MEMBERS if not hasattr(RequestRouter, name)]
    router = make_router(SessionRouter, [])
    if not hasattr(RequestRouter, "_pending_requests_to_fulfill"):  # an instance attribute
        assert isinstance(getattr(router, "_pending_requests_to_fulfill", None), deque), (
            "RequestRouter._pending_requests_to_fulfill is no longer a deque: see "
            "ingress/router_adapter.py"
        )
        missing.remove("_pending_requests_to_fulfill")
    assert not missing, f"Ray's RequestRouter lost {missing}: see ingress/router_adapter.py"
    for name, expected in SIGNATURES.items():
        params = list(inspect.signature(getattr(RequestRouter, name)).parameters)[1:]
        assert params == expected, f"RequestRouter.{name}{params}: see ingress/router_adapter.py"
    # The routing loop gives the adapter the metadata of the request it routed.
    loop_source = inspect.getsource(RequestRouter._fulfill_pending_requests)
    assert "self._fulfill_next_pending_request(" in loop_source
    assert "replica, request_metadata" in loop_source


async def test_sibling_calls_reach_each_their_owner():
    router = make_router(SessionRouter, [StandIn("r1"), StandIn("r2"), StandIn("r3")])
    requests = [
        pending("session_info", session_id=f"s{i}", owner=owner)
        for i, owner in enumerate(["r2", "r1", "r3", "r2", "r1"])
    ]
    assert await route(router, *requests) == ["r2", "r1", "r3", "r2", "r1"]
    assert not router._pending_requests_by_id  # the base class's index is left clean


async def test_a_call_for_a_gone_owner_fails_at_once():
    router = make_router(SessionRouter, [StandIn("r1")])
    gone, live = (
        pending("add_prompt", session_id="s1", owner="r9"),
        pending("add_prompt", session_id="s2", owner="r1"),
    )
    error, replica = await route(router, gone, live)
    assert isinstance(error, SessionUnavailableError)
    assert error.details["replica"] == "r9"
    assert replica == "r1"
    assert not router._pending_requests_by_id


async def test_new_sessions_go_where_slots_are_free():
    router = make_router(SessionRouter, [StandIn("r1", free_slots=1), StandIn("r2", free_slots=2)])
    creates = [pending("create_session", f"http-{i}", session_id=f"s{i}") for i in range(3)]
    placed = [(await route(router, create))[0] for create in creates]
    # r2 has 2 free, r1 1: placements count until the replicas' stats show them
    assert sorted(placed) == ["r1", "r2", "r2"]


async def test_ray_still_needs_the_override():
    """Ray's own matching (by the HTTP request's id) still misroutes or strands sibling calls.
    When this fails, Ray matches exactly: drop the override in ``ingress.router_adapter``."""

    class PlainSessionRouter(SessionRouter):
        _fulfill_next_pending_request = RequestRouter._fulfill_next_pending_request

    router = make_router(PlainSessionRouter, [StandIn("r1"), StandIn("r2")])
    first = pending("session_info", session_id="s1", owner="r1")
    second = pending("session_info", session_id="s2", owner="r2")
    tasks = [asyncio.ensure_future(router._choose_replica_for_request(r)) for r in (first, second)]
    done, stranded = await asyncio.wait(tasks, timeout=0.5)
    for task in stranded:
        task.cancel()
    await asyncio.gather(*stranded, return_exceptions=True)
    routed = [t.result().replica_id.unique_id if t in done else None for t in tasks]
    assert routed != ["r1", "r2"]


@pytest.fixture(autouse=True)
def _no_leftover_routers():
    yield
    router_adapter.live_routers.clear()

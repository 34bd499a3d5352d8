"""What the replicas report: ``/health`` and the replica ids behind ``/api/v1/models``.

Each replica publishes its stats to the session router (``record_routing_stats``); the routers
of this process hold the latest ones, so reading them costs no call to the replicas.
"""

from __future__ import annotations

from typing import Any

from ray.serve.handle import DeploymentHandle

from ingress.replica_calls import replica_api
from ingress.router_adapter import live_routers
from ingress.schemas import Health


async def replica_stats(replicas: DeploymentHandle, timeout_s: float) -> list[dict[str, Any]]:
    """Each replica's latest routing stats, as this process's session routers hold them."""
    if not live_routers:
        await replica_api(replicas, timeout_s).status()  # starts the router
    by_replica: dict[str, dict[str, Any]] = {}
    for router in list(live_routers):
        for stats in router.replica_stats():
            by_replica[stats.get("replica", str(len(by_replica)))] = stats
    return list(by_replica.values())


def health_report(stats: list[dict[str, Any]]) -> Health:
    """Replicas, sessions and capacity; ready once a replica reports."""
    reporting = [s for s in stats if "max_sessions" in s]
    gpu = [s["gpu_memory_mb"] for s in reporting if s.get("gpu_memory_mb") is not None]
    return Health(
        ready=bool(reporting),
        replicas=len(stats),
        active_sessions=sum(s["active_sessions"] for s in reporting),
        capacity=sum(s["max_sessions"] for s in reporting),
        queued_requests=sum(s["queued"] for s in reporting),
        gpu_memory_mb=sum(gpu) if gpu else None,
    )

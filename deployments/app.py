"""``build_app``: the Serve application from the one settings model. ``serve run`` and
``serve deploy`` call it with the config's ``args`` (``import_path: deployments.app:build_app``).

It composes both sides, the ingress and the SAM 2 replica, so it sits above them: the ingress
never imports the replica (nor torch), and nothing imports this module."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.autoscaling import SessionSlotsPolicy
from deployments.engine.host_memory import REPLICA_ENV
from deployments.protocol import ServiceSettings
from deployments.replica import SAM2Replica
from ingress.app import Ingress
from ingress.routing import SessionRouter

_SCALING_FIELDS = {
    "min_replicas",
    "max_replicas",
    "spare_slots",
    "upscale_delay_s",
    "downscale_delay_s",
}


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = ServiceSettings(**(args or {}))
    settings = settings.model_copy(update={"storage_root": settings.storage_root.resolve()})
    # Scaling settings stay out of the deployments' arguments, so changing them (say 2 -> 1
    # replicas) is a lightweight Serve update that keeps the running replicas and sessions.
    values = settings.model_dump(mode="json", exclude=_SCALING_FIELDS)
    replica = serve.deployment(SAM2Replica).options(
        name="SAM2Replica",
        ray_actor_options={
            "num_cpus": settings.replica_num_cpus,
            "num_gpus": settings.replica_num_gpus,
            # Merged into the application's runtime_env (its env_vars kept).
            "runtime_env": {"env_vars": REPLICA_ENV},
        },
        max_ongoing_requests=settings.max_ongoing_requests,
        request_router_config={
            "request_router_class": f"{SessionRouter.__module__}:{SessionRouter.__name__}",
            "request_routing_stats_period_s": settings.routing_stats_period_s,
            # A placement counts against its replica until the replica's next reports show it.
            "request_router_kwargs": {"placement_grace_s": settings.placement_grace_s},
            "request_routing_stats_timeout_s": settings.routing_stats_timeout_s,
        },
        **_scaling(settings),
    )
    ingress = Ingress.options(ray_actor_options={"num_cpus": settings.ingress_num_cpus})
    return ingress.bind(replica.bind(values), values)


def _scaling(settings: ServiceSettings) -> dict[str, Any]:
    """A fixed replica count when min == max, else autoscaling on active sessions."""
    if settings.min_replicas >= settings.max_replicas:
        return {"num_replicas": settings.min_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "upscale_delay_s": settings.upscale_delay_s,
            "downscale_delay_s": settings.downscale_delay_s,
            "metrics_interval_s": 1,
            "look_back_period_s": 2,
            "aggregation_function": "max",
            "policy": {
                "policy_function": f"{SessionSlotsPolicy.__module__}:{SessionSlotsPolicy.__name__}",
                "policy_kwargs": {
                    "max_sessions": settings.max_sessions,
                    "spare_slots": settings.spare_slots,
                },
            },
        }
    }

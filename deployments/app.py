"""``build_app``: the Serve application from the one settings model. ``serve run`` and
``serve deploy`` call it with the config's ``args`` (``import_path: deployments.app:build_app``).

It composes both sides, the ingress and the SAM 2 replica, so it sits above them: the ingress
never imports the replica (nor torch), and nothing imports this module. With the ``detector``
setting it adds the ``ConceptDetector`` deployment (SAM 3) and hands its handle to the SAM 2
replicas and the ingress (model composition); without it, neither gets one."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.autoscaling import SessionSlotsPolicy
from deployments.concept_detector import DetectorReplica
from deployments.protocol import ServiceSettings
from deployments.protocol.settings import DetectorSettings
from deployments.replica import SAM2Replica
from ingress.app import Ingress
from ingress.routing import SessionRouter

_SCALING_FIELDS = {
    "min_replicas",
    "max_replicas",
    "spare_slots",
    "upscale_delay_s",
    "downscale_delay_s",
    "detector_min_replicas",
    "detector_max_replicas",
    "detector_target_requests",
}


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = ServiceSettings(**(args or {}))
    settings = settings.model_copy(
        update={"storage_root": settings.storage_root.resolve(), "detector": _detector(settings)}
    )
    # Scaling settings stay out of the deployments' arguments, so changing them (say 2 -> 1
    # replicas) is a lightweight Serve update that keeps the running replicas and sessions.
    values = settings.model_dump(mode="json", exclude=_SCALING_FIELDS)
    # The SAM 2 replicas know the detector by its handle alone: tuning it restarts none of them.
    replica_values = {k: v for k, v in values.items() if k != "detector"}
    replica = serve.deployment(SAM2Replica).options(
        name="SAM2Replica",
        ray_actor_options={
            "num_cpus": settings.replica_num_cpus,
            "num_gpus": settings.replica_num_gpus,
            # Merged into the application's runtime_env (its env_vars kept).
            "runtime_env": {"env_vars": _replica_env(settings)},
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
    detector = _detector_app(settings)
    return ingress.bind(replica.bind(replica_values, detector), values, detector)


def _detector(settings: ServiceSettings) -> DetectorSettings | None:
    """The detector's settings as every deployment will see them: the values the config
    named, the environment's (``SAM2_SERVE_DETECTOR_<FIELD>``) for the others, and random
    weights when the service runs SAM 2 on random weights and the detector names none."""
    if settings.detector is None:
        return None
    named = settings.detector.model_dump(exclude_unset=True)
    if settings.weights == "random":
        named.setdefault("weights", "random")
    return DetectorSettings(**named)


def _detector_app(settings: ServiceSettings) -> Application | None:
    """The ConceptDetector deployment, or None when no detector is configured."""
    if settings.detector is None:
        return None
    minimum, maximum = settings.detector_min_replicas, settings.detector_max_replicas
    scaling: dict[str, Any] = (
        {"num_replicas": minimum}
        if minimum >= maximum
        else {
            "autoscaling_config": {
                "min_replicas": minimum,
                "max_replicas": maximum,
                "target_ongoing_requests": settings.detector_target_requests,
            }
        }
    )
    detector = serve.deployment(DetectorReplica).options(
        name="ConceptDetector",
        ray_actor_options={
            "num_cpus": settings.detector_num_cpus,
            "num_gpus": settings.detector_num_gpus,
        },
        **scaling,
    )
    return detector.bind(settings.detector.model_dump(mode="json"))


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


def _replica_env(settings: ServiceSettings) -> dict[str, str]:
    """The SAM 2 replicas' environment variables (``replica_malloc_arena_max``)."""
    arenas = settings.replica_malloc_arena_max
    return {"MALLOC_ARENA_MAX": str(arenas)} if arenas else {}

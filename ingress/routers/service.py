"""Service routes: health and the model registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deployments.engine import REGISTRY
from ingress.routers.deps import OpenService, Service
from ingress.schemas import Health, ModelEntry, ModelList

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(service: OpenService):
    """Replicas, sessions and capacity; 503 while no SAM 2 replica is ready."""
    report = await service.health()
    if not report.ready:
        return JSONResponse(report.model_dump(), status_code=503)
    return report


@router.get("/api/v1/models", response_model=ModelList)
async def models(service: Service) -> ModelList:
    """The model registry; `loaded` and `replicas` say which replicas loaded which model."""
    loaded_on: dict[str, list[str]] = {}
    for stats in await service.replica_stats():
        if "model" in stats:
            loaded_on.setdefault(stats["model"], []).append(stats["replica"])
    entries = [(s.name, s.config, s.checkpoint) for s in REGISTRY.values()]
    if service.settings.model not in REGISTRY:  # custom
        entries.append((service.settings.model, service.settings.custom_config or "", ""))
    return ModelList(
        default=service.settings.model,
        models=[
            ModelEntry(
                name=name,
                config=config,
                checkpoint=checkpoint,
                loaded=name in loaded_on,
                replicas=loaded_on.get(name, []),
            )
            for name, config, checkpoint in entries
        ],
    )

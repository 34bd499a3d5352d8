"""Service routes: health and the model registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deployments.engine import REGISTRY
from ingress.routers.deps import Service
from ingress.schemas import Health, ModelEntry, ModelList

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(service: Service):
    """Replicas, sessions and capacity; 503 while no SAM 2 replica is ready."""
    report = await service.health()
    if not report.ready:
        return JSONResponse(report.model_dump(), status_code=503)
    return report


@router.get("/api/v1/models", response_model=ModelList)
async def models(service: Service) -> ModelList:
    """The model registry; `loaded` marks the model the SAM 2 replicas run."""
    served = service.settings.model
    return ModelList(
        default=served,
        models=[
            ModelEntry(
                name=s.name, config=s.config, checkpoint=s.checkpoint, loaded=s.name == served
            )
            for s in REGISTRY.values()
        ],
    )

"""Service routes: health and the model registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deployments.protocol import REGISTRY
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
    """The model registry; `loaded`, `replicas`, `compute_dtype`, `device`, `compile` and
    `warmup_s` say which replicas loaded which model, how they run it and what starting cost."""
    loaded: dict[str, list[dict]] = {}
    for stats in await service.replica_stats():
        if "model" in stats:
            loaded.setdefault(stats["model"], []).append(stats)
    entries = [(s.name, s.config, s.checkpoint) for s in REGISTRY.values()]
    if service.settings.model not in REGISTRY:  # custom
        entries.append((service.settings.model, service.settings.custom_config or "", ""))
    return ModelList(
        default=service.settings.model,
        models=[_entry(*entry, loaded.get(entry[0], [])) for entry in entries],
    )


def _entry(name: str, config: str, checkpoint: str, replicas: list[dict]) -> ModelEntry:
    """One registry entry with what its replicas report (replicas of one model share one
    configuration, so the first one's dtype, device and compile stand for all)."""
    first = replicas[0] if replicas else {}
    return ModelEntry(
        name=name,
        config=config,
        checkpoint=checkpoint,
        loaded=bool(replicas),
        replicas=[stats["replica"] for stats in replicas],
        compute_dtype=first.get("compute_dtype"),
        device=first.get("device"),
        compile=first.get("compile"),
        warmup_s=first.get("warmup_s"),
    )

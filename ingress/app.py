"""The FastAPI app and the Serve ingress deployment that serves it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.protocol import ServiceSettings
from ingress import errors, web
from ingress.routers import (
    exports,
    images,
    masks,
    prompts,
    propagation,
    service,
    sessions,
    track,
)
from ingress.service import SessionService
from session_store import open_store


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Expire idle sessions in the background while the app runs."""
    session_service: SessionService | None = app.state.service
    task = asyncio.create_task(session_service.expire_forever()) if session_service else None
    yield
    if task is not None:
        task.cancel()


def create_app(session_service: SessionService | None = None) -> FastAPI:
    """The app with one router per resource; without a service it still serves its OpenAPI
    schema (docs, schema tests)."""
    app = FastAPI(
        title="sam2-serve",
        version="1.0.0",
        description="SAM 2 video segmentation sessions. Contract: shared/api/CONTRACT.md. "
        "Propagation also streams over a WebSocket: /api/v1/sessions/{session_id}/propagate/ws.",
        lifespan=_lifespan,
    )
    for resource in (sessions, prompts, propagation, masks, exports, images, track, service):
        app.include_router(resource.router)
    errors.install(app)
    web.install(app)
    app.state.service = session_service
    return app


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """HTTP only: routes, schemas, errors, and routing to the replica that owns a session."""

    def __init__(
        self,
        replicas: DeploymentHandle,
        settings: dict[str, Any],
        detector: DeploymentHandle | None = None,
    ) -> None:
        """``detector``: the ConceptDetector deployment's handle, where one is configured."""
        config = ServiceSettings(**settings)
        self._service = SessionService(replicas, open_store(config), config, detector=detector)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve builds the app in the replica, after __init__, around this replica's service."""
        return create_app(self._service)

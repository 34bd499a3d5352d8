"""Dependencies shared by the routers: the session service, as seen by the caller's API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from ingress.service import SessionService


def bearer_key(connection: HTTPConnection) -> str | None:
    scheme, _, key = connection.headers.get("authorization", "").partition(" ")
    return (key.strip() or None) if scheme.lower() == "bearer" else None


def get_service(request: Request) -> SessionService:
    """The service for the caller; 401 when API keys are on and the key is missing or wrong."""
    return request.app.state.service.for_caller(bearer_key(request))


def get_open_service(request: Request) -> SessionService:
    """The service without authentication (only /health)."""
    return request.app.state.service


Service = Annotated[SessionService, Depends(get_service)]
OpenService = Annotated[SessionService, Depends(get_open_service)]

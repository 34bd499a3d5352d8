"""Dependencies shared by the routers: the session service, as seen by the caller's API key,
and the review thresholds that the review list and the object timelines share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
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


@dataclass(frozen=True)
class ReviewThresholds:
    """What makes a frame worth a look."""

    score: float
    iou: float


def review_thresholds(
    score_threshold: float = Query(0.5, ge=0, le=1, description="Scores below it are flagged."),
    iou_threshold: float = Query(
        0.5, ge=0, le=1, description="IoU with the previous frame below it is an area jump."
    ),
) -> ReviewThresholds:
    return ReviewThresholds(score_threshold, iou_threshold)


Service = Annotated[SessionService, Depends(get_service)]
OpenService = Annotated[SessionService, Depends(get_open_service)]
Thresholds = Annotated[ReviewThresholds, Depends(review_thresholds)]

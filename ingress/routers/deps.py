"""Dependencies shared by the routers: the session service, as seen by the caller's API key,
the review thresholds that the review list and the object timelines share, and the masks' page
size.

A value the client may leave out and the server's settings decide (thresholds, page size) is
declared with its setting's default, so the OpenAPI schema documents the defaults; the value a
deployment configured applies when the client names none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

from deployments.protocol import ServiceSettings
from ingress.service import SessionService

_DEFAULTS = ServiceSettings.model_fields
MASKS_PAGE_SIZE: int = _DEFAULTS["masks_page_size"].default
MASKS_PAGE_MAX: int = _DEFAULTS["masks_page_max"].default


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
    request: Request,
    score_threshold: float = Query(
        _DEFAULTS["review_score_threshold"].default,
        ge=0,
        le=1,
        description="Scores below it are flagged.",
    ),
    iou_threshold: float = Query(
        _DEFAULTS["review_iou_threshold"].default,
        ge=0,
        le=1,
        description="IoU with the previous frame below it is an area jump.",
    ),
) -> ReviewThresholds:
    """The thresholds the client named; the server's settings for those it left out."""
    settings = request.app.state.service.settings
    named = request.query_params
    return ReviewThresholds(
        score_threshold if "score_threshold" in named else settings.review_score_threshold,
        iou_threshold if "iou_threshold" in named else settings.review_iou_threshold,
    )


def masks_page(request: Request, limit: int) -> int:
    """Frames per page of masks: the client's ``limit`` if it named one, at most the
    ``masks_page_max`` setting (422 past it); else the ``masks_page_size`` setting."""
    settings = request.app.state.service.settings
    if "limit" not in request.query_params:
        return settings.masks_page_size
    if limit > settings.masks_page_max:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "limit"),
                    "msg": f"Input should be less than or equal to {settings.masks_page_max}",
                    "input": limit,
                }
            ]
        )
    return limit


Service = Annotated[SessionService, Depends(get_service)]
OpenService = Annotated[SessionService, Depends(get_open_service)]
Thresholds = Annotated[ReviewThresholds, Depends(review_thresholds)]

"""Masks of a session, by frame range and object, as COCO RLE."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ingress.routers.deps import MASKS_PAGE_MAX, MASKS_PAGE_SIZE, Service, Thresholds, masks_page
from ingress.schemas import (
    ERROR_RESPONSES,
    MAX_INDEX,
    FrameMasksResponse,
    MasksResponse,
    ReviewFrame,
    ReviewResponse,
    SessionId,
)

router = APIRouter(prefix="/api/v1/sessions/{session_id}", tags=["masks"])


@router.get("/masks", response_model=MasksResponse, responses=ERROR_RESPONSES)
async def get_masks(
    request: Request,
    session_id: SessionId,
    service: Service,
    start: int | None = Query(None, ge=0, le=MAX_INDEX, description="First frame (inclusive)."),
    end: int | None = Query(None, ge=0, le=MAX_INDEX, description="Last frame (inclusive)."),
    obj_id: int | None = Query(None, ge=1, le=255, description="Only this object."),
    limit: int = Query(
        MASKS_PAGE_SIZE,
        ge=1,
        le=MASKS_PAGE_MAX,
        description=f"Frames per page (default {MASKS_PAGE_SIZE}, at most {MASKS_PAGE_MAX}).",
    ),
) -> MasksResponse:
    """Computed masks in the range, a page at a time; frames without a mask are left out.
    `next_start` says where the next page starts."""
    page = await service.masks(session_id, start, end, obj_id, masks_page(request, limit))
    return MasksResponse(
        frames=[FrameMasksResponse(frame_index=f.frame_index, masks=f.masks) for f in page.frames],
        next_start=page.next_start,
    )


@router.get("/review", response_model=ReviewResponse, responses=ERROR_RESPONSES)
async def review(session_id: SessionId, service: Service, thresholds: Thresholds) -> ReviewResponse:
    """Frames that need a correction, worst first: low score, object lost, abrupt change."""
    items = await service.review(session_id, thresholds.score, thresholds.iou)
    return ReviewResponse(frames=[ReviewFrame(**vars(item)) for item in items])

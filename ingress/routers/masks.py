"""Masks of a session, by frame range and object, as COCO RLE."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ingress.routers.deps import Service
from ingress.routers.sessions import _ERRORS
from ingress.schemas import FrameMasksResponse, MasksResponse

router = APIRouter(prefix="/api/v1/sessions/{session_id}", tags=["masks"])


@router.get("/masks", response_model=MasksResponse, responses=_ERRORS)
async def get_masks(
    session_id: str,
    service: Service,
    start: int | None = Query(None, ge=0, description="First frame (inclusive)."),
    end: int | None = Query(None, ge=0, description="Last frame (inclusive)."),
    obj_id: int | None = Query(None, ge=1, description="Only this object."),
) -> MasksResponse:
    """Every computed mask in the range; frames without a mask are left out."""
    frames = await service.masks(session_id, start, end, obj_id)
    return MasksResponse(
        frames=[FrameMasksResponse(frame_index=f.frame_index, masks=f.masks) for f in frames]
    )

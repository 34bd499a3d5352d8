"""Objects and prompts: clicks, boxes and masks on any frame; objects' names; clearing."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from deployments.protocol import ClearResult, ObjectInfo, ObjectTimeline, Prompt, PromptResult
from ingress.routers.deps import Service, Thresholds
from ingress.schemas import (
    ERROR_RESPONSES,
    ObjectList,
    ObjectPatch,
    SessionId,
)
from ingress.uploads import LimitedBodyRoute

router = APIRouter(
    prefix="/api/v1/sessions/{session_id}",
    tags=["objects and prompts"],
    route_class=LimitedBodyRoute,
)


@router.post("/prompts", response_model=PromptResult, responses=ERROR_RESPONSES)
async def add_prompt(session_id: SessionId, prompt: Prompt, service: Service) -> PromptResult:
    """Points (+/- labels), a box and/or a mask for one object on one frame."""
    return await service.add_prompt(session_id, prompt)


@router.get("/objects", response_model=ObjectList, responses=ERROR_RESPONSES)
async def list_objects(session_id: SessionId, service: Service) -> ObjectList:
    return ObjectList(objects=await service.objects(session_id))


@router.patch("/objects/{obj_id}", response_model=ObjectInfo, responses=ERROR_RESPONSES)
async def update_object(
    session_id: SessionId, obj_id: int, patch: ObjectPatch, service: Service
) -> ObjectInfo:
    return await service.update_object(session_id, obj_id, patch.name, patch.category)


@router.get("/objects/{obj_id}/timeline", response_model=ObjectTimeline, responses=ERROR_RESPONSES)
async def object_timeline(
    session_id: SessionId, obj_id: int, service: Service, thresholds: Thresholds
) -> ObjectTimeline:
    """Where the object has masks (runs of frames), where it was prompted, and its review
    marks: a timeline of an hour-long video in one small answer, without its masks."""
    return await service.timeline(session_id, obj_id, thresholds.score, thresholds.iou)


@router.delete("/objects/{obj_id}", status_code=204, responses=ERROR_RESPONSES)
async def delete_object(session_id: SessionId, obj_id: int, service: Service) -> Response:
    await service.remove_object(session_id, obj_id)
    return Response(status_code=204)


@router.delete(
    "/frames/{frame_index}/prompts", response_model=ClearResult, responses=ERROR_RESPONSES
)
async def clear_prompts(
    session_id: SessionId,
    frame_index: int,
    service: Service,
    obj_id: int | None = Query(None, description="Only this object's prompts."),
) -> ClearResult:
    return await service.clear_prompts(session_id, frame_index, obj_id)

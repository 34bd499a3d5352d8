"""Objects and prompts: clicks, boxes, masks and texts on any frame; objects' names;
clearing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import Discriminator, Tag

from deployments.protocol import ClearResult, ObjectInfo, ObjectTimeline, Prompt, PromptResult
from deployments.protocol.concepts import TextPromptResult
from ingress.routers.deps import Service, Thresholds
from ingress.schemas import (
    ERROR_RESPONSES,
    ErrorBody,
    ObjectList,
    ObjectPatch,
    SessionId,
    TextPromptRequest,
)
from ingress.uploads import LimitedBodyRoute

router = APIRouter(
    prefix="/api/v1/sessions/{session_id}",
    tags=["objects and prompts"],
    route_class=LimitedBodyRoute,
)


def _kind(body: Any) -> str:
    """A body with ``text`` is a text prompt (which then refuses points, box and mask)."""
    text = isinstance(body, TextPromptRequest) or (isinstance(body, dict) and "text" in body)
    return "text" if text else "object"


AnyPrompt = Annotated[
    Annotated[Prompt, Tag("object")] | Annotated[TextPromptRequest, Tag("text")],
    Discriminator(_kind),
]
_TEXT_RESPONSES = {
    409: {
        "model": ErrorBody,
        "description": "A text prompt where no concept detector is configured "
        "(`detector_unavailable`, the setting named in `details`), or while a propagation "
        "runs.",
    },
    **ERROR_RESPONSES,
}


@router.post("/prompts", response_model=PromptResult | TextPromptResult, responses=_TEXT_RESPONSES)
async def add_prompt(
    session_id: SessionId, prompt: Annotated[AnyPrompt, Body()], service: Service
) -> PromptResult | TextPromptResult:
    """Points (+/- labels), a box and/or a mask for one object on one frame; or a text: every
    instance of it on the frame (the concept detector) becomes an object of that category,
    unless it matches one (mask IoU), and the answer lists them with their detector scores."""
    if isinstance(prompt, TextPromptRequest):
        return await service.add_text_prompt(session_id, prompt.prompt())
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

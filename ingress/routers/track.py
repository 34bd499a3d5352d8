"""``POST /track``: a whole video and clicks on one frame in, a ZIP of one PNG mask per frame
out. Compatible with existing clients of this call."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from deployments.protocol import InvalidRequestError, Prompt
from ingress.routers.deps import Service
from ingress.schemas import BINARY, ERROR_RESPONSES, request_body
from ingress.uploads import limited_form, media_type, safe_suffix, save_body, save_upload, validated

router = APIRouter(tags=["one-shot"])
_BODY = request_body(
    {"video": BINARY}, required=["video"], other={"application/octet-stream": BINARY}
)


@router.post(
    "/track",
    response_class=FileResponse,
    openapi_extra=_BODY,
    responses={200: {"content": {"application/zip": {}}}, **ERROR_RESPONSES},
)
async def track(
    request: Request,
    service: Service,
    points: Annotated[list[str], Query(description="Repeated `x,y` in source pixels.")],
    frame_idx: int = Query(0, ge=0, description="Frame of the clicks."),
    labels: str | None = Query(None, description="Comma-separated 1/0 per point; default 1s."),
) -> FileResponse:
    """Track the clicked object through the video: ZIP of `00000.png`... at source size."""
    prompt = _prompt(frame_idx, points, labels)
    upload = service.settings.upload_dir / uuid.uuid4().hex
    try:
        upload = await _receive(request, upload, service.settings.max_upload_bytes)
        zip_path = await service.track(upload, prompt)
    finally:
        upload.unlink(missing_ok=True)
    return FileResponse(
        zip_path,
        media_type="application/zip",
        filename="masks.zip",
        background=BackgroundTask(zip_path.unlink, missing_ok=True),
    )


def _prompt(frame_idx: int, points: list[str], labels: str | None) -> Prompt:
    try:
        xy = [tuple(float(v) for v in point.split(",")) for point in points]
        label_list = [int(v) for v in labels.split(",")] if labels else None
    except ValueError:
        raise InvalidRequestError("points are x,y numbers and labels 1/0 numbers") from None
    if any(len(point) != 2 for point in xy):
        raise InvalidRequestError("each point is x,y")
    return validated(
        Prompt, {"frame_index": frame_idx, "obj_id": 1, "points": xy, "labels": label_list}
    )


async def _receive(request: Request, target: Path, limit: int) -> Path:
    """Multipart field ``video``, or the raw body streamed to disk as it arrives."""
    if media_type(request) != "multipart/form-data":
        return await save_body(request, target, limit)
    async with limited_form(request, limit) as form:
        video = form.get("video")
        if not isinstance(video, UploadFile):
            raise InvalidRequestError("multipart field 'video' is missing")
        return await save_upload(video, target.with_suffix(safe_suffix(video.filename)))

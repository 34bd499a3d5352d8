"""Exports of a session's masks, streamed from a spool file that is removed afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from deployments.protocol import EXPORTS, ExportFormat
from ingress.routers.deps import Service
from ingress.schemas import ERROR_RESPONSES, SessionId

router = APIRouter(prefix="/api/v1/sessions/{session_id}", tags=["exports"])
_FORMATS = (
    "coco: COCO JSON with RLE; png_zip: a binary PNG per frame and object; davis: a palette PNG "
    "per frame whose values are object ids; mp4: H.264 video with the masks drawn."
)
_DOWNLOADS = {
    200: {
        "description": "COCO JSON, a ZIP of PNGs, or an H.264 MP4.",
        "content": {media: {} for media, _ in EXPORTS.values()},
    },
    **ERROR_RESPONSES,
}


@router.get("/export", response_class=FileResponse, responses=_DOWNLOADS)
async def export(
    session_id: SessionId,
    service: Service,
    format: Annotated[ExportFormat, Query(description=_FORMATS)],
    obj_id: int | None = Query(None, ge=1, description="Only this object."),
) -> FileResponse:
    """Download the session's masks; long videos are written to disk, never held in memory."""
    path = await service.export(session_id, format, obj_id)
    media_type, suffix = EXPORTS[format]
    name = f"{session_id}_{format}{suffix}"
    return FileResponse(
        path,
        media_type=media_type,
        filename=name,
        background=BackgroundTask(Path(path).unlink, missing_ok=True),
    )

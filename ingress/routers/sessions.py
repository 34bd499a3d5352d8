"""Sessions: create (upload or server-side video), list, read, reset, delete, frames."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from deployments.engine import (
    ForbiddenPathError,
    InvalidRequestError,
    NotFoundError,
    UnsupportedMediaError,
    VideoOptions,
)
from ingress.routers.deps import Service
from ingress.schemas import ErrorBody, ServerVideo, Session, SessionList

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
_VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
_OPTION_FIELDS = ("start_time", "end_time", "max_side", "frame_stride")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 403, 404, 413, 415, 422, 503, 504)
}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "start_time": {"type": "string", "description": "s or HH:MM:SS[.ms]"},
                        "end_time": {"type": "string", "description": "s or HH:MM:SS[.ms]"},
                        "max_side": {"type": "integer", "minimum": 16},
                        "frame_stride": {"type": "integer", "minimum": 1},
                        "model": {"type": "string"},
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/ServerVideo"}},
        },
    }
}


@router.post(
    "", status_code=201, response_model=Session, openapi_extra=_CREATE_BODY, responses=_ERRORS
)
async def create_session(request: Request, service: Service) -> Session:
    """Upload a video (multipart field `file`) or name one under VIDEO_ROOT (JSON)."""
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        return await _create_from_upload(request, service)
    if media_type == "application/json":
        body = _validated(ServerVideo, await request.json())
        video = _server_video(service.settings.video_root, body.video_path)
        options = VideoOptions(**body.model_dump(include=set(_OPTION_FIELDS)))
        return await service.create(video, options, body.model, is_upload=False)
    raise UnsupportedMediaError(
        f"send the video as multipart/form-data or name it in JSON, not {media_type or 'nothing'}"
    )


@router.get("", response_model=SessionList)
async def list_sessions(service: Service) -> SessionList:
    return SessionList(sessions=await service.list())


@router.get("/{session_id}", response_model=Session, responses=_ERRORS)
async def get_session(session_id: str, service: Service) -> Session:
    return await service.get(session_id)


@router.delete("/{session_id}", status_code=204, responses=_ERRORS)
async def delete_session(session_id: str, service: Service) -> Response:
    await service.delete(session_id)
    return Response(status_code=204)


@router.post("/{session_id}/reset", response_model=Session, responses=_ERRORS)
async def reset_session(session_id: str, service: Service) -> Session:
    return await service.reset(session_id)


@router.get(
    "/{session_id}/frames/{frame_index}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS},
)
async def get_frame(session_id: str, frame_index: int, service: Service) -> Response:
    """The processed frame (frame space) as JPEG; frames never change, so caches may keep it."""
    data = await service.frame_jpeg(session_id, frame_index)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get(
    "/{session_id}/frames/{frame_index}/overlay",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS},
)
async def get_overlay(session_id: str, frame_index: int, service: Service) -> Response:
    """The frame with the current masks drawn; masks change, so it is not cached."""
    data = await service.overlay_jpeg(session_id, frame_index)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _create_from_upload(request: Request, service: Service) -> Session:
    """Starlette spools the upload to a temporary file (never whole in memory); it is copied to
    the shared upload folder, where the replica ingests and removes it."""
    async with request.form() as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("multipart field 'file' with the video is missing")
        options = _validated(VideoOptions, {k: form[k] for k in _OPTION_FIELDS if form.get(k)})
        model = form.get("model") or None
        suffix = Path(upload.filename or "").suffix.lower()
        target = (
            service.settings.upload_dir
            / f"{uuid.uuid4().hex}{suffix if suffix in _VIDEO_SUFFIXES else ''}"
        )
        await asyncio.to_thread(_save, upload, target)
    return await service.create(target, options, model, is_upload=True)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _suffix(filename: str | None) -> str:
    """A known video suffix of the client's file name, or none: names never become paths."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in _VIDEO_SUFFIXES else ""


def _save(upload: UploadFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)


def _server_video(root: Path | None, relative: str) -> Path:
    """``relative`` resolved under ``root``; 403 when it would leave it, 404 when missing."""
    if root is None:
        raise ForbiddenPathError("this server has no VIDEO_ROOT; upload the video instead")
    base = root.resolve()
    path = (base / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(base):
        raise ForbiddenPathError("video_path must stay inside VIDEO_ROOT")
    if not path.is_file():
        raise NotFoundError(f"no video at {relative!r} under VIDEO_ROOT")
    return path


def _validated(model: type, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None

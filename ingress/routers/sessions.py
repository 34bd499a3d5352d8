"""Sessions: create (upload, server-side video or video object), list, read, reset, delete,
frames."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from deployments.protocol import (
    ForbiddenPathError,
    InvalidRequestError,
    NotFoundError,
    UnsupportedMediaError,
    VideoOptions,
)
from deployments.protocol.locations import ObjectLocation
from deployments.protocol.settings import ServiceSettings
from ingress.routers.deps import Service
from ingress.schemas import (
    BINARY,
    ERROR_RESPONSES,
    ServerVideo,
    Session,
    SessionId,
    SessionList,
    request_body,
)
from ingress.uploads import (
    limited_form,
    media_type,
    read_json,
    safe_suffix,
    save_upload,
    validated,
)

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
_OPTION_FIELDS = ("start_time", "end_time", "max_side", "frame_stride")
_CREATE_BODY = request_body(
    {
        "file": BINARY,
        "start_time": {"type": "string", "description": "s or HH:MM:SS[.ms]"},
        "end_time": {"type": "string", "description": "s or HH:MM:SS[.ms]"},
        "max_side": {"type": "integer", "minimum": 16},
        "frame_stride": {"type": "integer", "minimum": 1},
        "model": {"type": "string"},
    },
    required=["file"],
    other={"application/json": ServerVideo.model_json_schema()},
)


@router.post(
    "",
    status_code=201,
    response_model=Session,
    openapi_extra=_CREATE_BODY,
    responses=ERROR_RESPONSES,
)
async def create_session(request: Request, service: Service) -> Session:
    """Upload a video (multipart field `file`), or name one under VIDEO_ROOT (JSON
    `video_path`) or in an allow-listed bucket (JSON `video_url`, s3://bucket/key)."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _create_from_upload(request, service)
    if kind == "application/json":
        body = await read_json(request, ServerVideo, service.settings.max_json_bytes)
        video = _named_video(service.settings, body)
        options = VideoOptions(**body.model_dump(include=set(_OPTION_FIELDS)))
        return await service.create(video, options, body.model, is_upload=False)
    raise UnsupportedMediaError(
        f"send the video as multipart/form-data or name it in JSON, not {kind or 'nothing'}"
    )


@router.get("", response_model=SessionList)
async def list_sessions(service: Service) -> SessionList:
    return SessionList(sessions=await service.list())


@router.get("/{session_id}", response_model=Session, responses=ERROR_RESPONSES)
async def get_session(session_id: SessionId, service: Service) -> Session:
    return await service.get(session_id)


@router.delete("/{session_id}", status_code=204, responses=ERROR_RESPONSES)
async def delete_session(session_id: SessionId, service: Service) -> Response:
    await service.delete(session_id)
    return Response(status_code=204)


@router.post("/{session_id}/reset", response_model=Session, responses=ERROR_RESPONSES)
async def reset_session(session_id: SessionId, service: Service) -> Session:
    return await service.reset(session_id)


@router.get(
    "/{session_id}/frames/{frame_index}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **ERROR_RESPONSES},
)
async def get_frame(session_id: SessionId, frame_index: int, service: Service) -> Response:
    """The frame (frame space) as JPEG, decoded from the source; frames never change, so
    caches may keep it."""
    data = await service.frame_jpeg(session_id, frame_index)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get(
    "/{session_id}/frames/{frame_index}/overlay",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **ERROR_RESPONSES},
)
async def get_overlay(session_id: SessionId, frame_index: int, service: Service) -> Response:
    """The frame with the current masks drawn; masks change, so it is not cached."""
    data = await service.overlay_jpeg(session_id, frame_index)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _create_from_upload(request: Request, service: Service) -> Session:
    """The form streams in (413 past the size limit; files spool to disk, never whole in
    memory); the video is copied to the shared upload folder, from where the replica moves it
    into the session's directory (or removes it, if it is refused)."""
    async with limited_form(request, service.settings.max_upload_bytes) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("multipart field 'file' with the video is missing")
        options = validated(VideoOptions, {k: form[k] for k in _OPTION_FIELDS if form.get(k)})
        model = form.get("model") or None
        target = service.settings.upload_dir / (uuid.uuid4().hex + safe_suffix(upload.filename))
        await save_upload(upload, target)
    return await service.create(target, options, model, is_upload=True)


def _named_video(settings: ServiceSettings, body: ServerVideo) -> Path | ObjectLocation:
    if body.video_url is not None:
        return _object_video(settings.s3_buckets, body.video_url)
    assert body.video_path is not None  # ServerVideo holds one of them
    return _server_video(settings.video_root, body.video_path)


def _object_video(buckets: list[str], url: str) -> ObjectLocation:
    """``url`` parsed (422 for a scheme other than s3://); 403 for a bucket not allow-listed.
    A missing object is found missing by the replica that opens it (404)."""
    location = ObjectLocation.parse(url)
    if location.bucket not in buckets:
        raise ForbiddenPathError(f"bucket {location.bucket!r} is not one this server reads")
    return location


def _server_video(root: Path | None, relative: str) -> Path:
    """``relative`` resolved under ``root``; 403 when it would leave it, 404 when missing."""
    if root is None:
        raise ForbiddenPathError("this server has no VIDEO_ROOT; upload the video instead")
    base = root.resolve()
    path = (base / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(base):
        raise ForbiddenPathError("video_path must stay inside VIDEO_ROOT")
    try:
        found = path.is_file()
    except OSError:  # a name too long for the filesystem, and the like: no such file either
        found = False
    if not found:
        raise NotFoundError(f"no video at {relative!r} under VIDEO_ROOT")
    return path

"""Request bodies in: media types, the upload size limit enforced while the body streams (413
before the rest arrives), uploads saved to the shared storage. Client file names never become
paths: only a known video suffix is kept."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Message

from deployments.protocol import (
    BodyTooLargeError,
    InvalidRequestError,
    ServiceSettings,
    UploadTooLargeError,
    VideoTooLargeError,
)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
_MAX_FORM_FIELDS = 32


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def safe_suffix(filename: str | None) -> str:
    """A known video suffix of the client's file name, or none."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ""


@asynccontextmanager
async def limited_form(
    request: Request, limit: int, error: type[VideoTooLargeError] = UploadTooLargeError
) -> AsyncIterator[FormData]:
    """The multipart form, parsed as it streams (files spool to disk), refused with ``error``
    (413) once more than ``limit`` bytes arrived."""
    _check_declared_length(request, limit, error)
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), limit, error),
        max_files=4,
        max_fields=_MAX_FORM_FIELDS,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequestError(f"malformed multipart body: {exc.message}") from None
    try:
        yield form
    finally:
        await form.close()


async def save_upload(upload: UploadFile, target: Path) -> Path:
    """Copy a spooled upload to ``target`` (the shared storage), off the event loop."""
    await asyncio.to_thread(_copy, upload, target)
    return target


async def save_body(request: Request, target: Path, limit: int) -> Path:
    """Stream a raw request body to ``target``; 413 once it passes ``limit`` bytes."""
    _check_declared_length(request, limit)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        async for chunk in _limited(request.stream(), limit):
            out.write(chunk)
    if target.stat().st_size == 0:
        raise InvalidRequestError("the request has no body")
    return target


async def read_json(request: Request, model: type, limit: int) -> Any:
    """The JSON body as ``model``; 413 past ``limit`` bytes (before parsing), malformed JSON
    and invalid fields 422."""
    _check_declared_length(request, limit, BodyTooLargeError)
    body = bytearray()
    async for chunk in _limited(request.stream(), limit, BodyTooLargeError):
        body += chunk
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        error = {"type": "json_invalid", "loc": ("body",), "msg": f"invalid JSON: {exc}"}
        raise RequestValidationError([error]) from None
    return validated(model, data)


def validated(model: type, data: Any) -> Any:
    """``model`` from ``data``; a validation error answers 422 like FastAPI's own."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _check_declared_length(
    request: Request, limit: int, error: type[VideoTooLargeError] = UploadTooLargeError
) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise error(f"the request body is larger than {limit} bytes", max_bytes=limit)


async def _limited(
    stream: AsyncIterator[bytes],
    limit: int,
    error: type[VideoTooLargeError] = UploadTooLargeError,
) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise error(f"the request body is larger than {limit} bytes", max_bytes=limit)
        yield chunk


def _copy(upload: UploadFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)


class LimitedBodyRoute(APIRoute):
    """A route whose body FastAPI parses whole (JSON): at most the ``max_json_bytes`` setting,
    refused with 413 from its Content-Length or once the streamed body passes it, before it is
    parsed.

    The 413 is an ``HTTPException`` because FastAPI turns any other error raised while it reads
    a body into a 400.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            most = _json_limit(request)
            too_large = HTTPException(413, f"the request body is larger than {most} bytes")
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > most:
                raise too_large
            receive, received = request.receive, 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > most:
                    raise too_large
                return message

            return await handler(Request(request.scope, receive_limited))

        return limited


def _json_limit(request: Request) -> int:
    """The service's ``max_json_bytes``; the default for an app without a service."""
    service = request.app.state.service
    return (service.settings if service is not None else ServiceSettings()).max_json_bytes

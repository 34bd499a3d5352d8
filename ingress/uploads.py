"""Request bodies in: media types, the upload size limit enforced while the body streams (413
before the rest arrives), uploads saved to the shared storage. Client file names never become
paths: only a known video suffix is kept."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from deployments.protocol import InvalidRequestError, UploadTooLargeError

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
_MAX_FORM_FIELDS = 32


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def safe_suffix(filename: str | None) -> str:
    """A known video suffix of the client's file name, or none."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ""


@asynccontextmanager
async def limited_form(request: Request, limit: int) -> AsyncIterator[FormData]:
    """The multipart form, parsed as it streams (files spool to disk), refused with
    ``UploadTooLargeError`` once more than ``limit`` bytes arrived."""
    _check_declared_length(request, limit)
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), limit),
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


async def read_json(request: Request, model: type) -> Any:
    """The JSON body as ``model``; malformed JSON and invalid fields answer 422."""
    try:
        data = await request.json()
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


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLargeError(f"the upload is larger than {limit} bytes", max_bytes=limit)


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise UploadTooLargeError(f"the upload is larger than {limit} bytes", max_bytes=limit)
        yield chunk


def _copy(upload: UploadFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)

"""Image segmentation: one image with points/box through the video engine (a one-frame
session), and/or a text through the concept detector (every instance of it)."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from deployments.protocol import (
    BodyTooLargeError,
    InvalidRequestError,
    Prompt,
    UnsupportedMediaError,
)
from ingress.routers.deps import Service
from ingress.schemas import (
    BINARY,
    ERROR_RESPONSES,
    ErrorBody,
    ImagePrompt,
    ImageRequest,
    ImageSegmentation,
    request_body,
)
from ingress.uploads import limited_form, media_type, read_json, validated

router = APIRouter(prefix="/api/v1/image", tags=["images"])
_BODY = request_body(
    {
        "file": BINARY,
        "prompts": {
            "type": "string",
            "description": 'JSON: {"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1], '
            '"normalized": false, "text": "grasper", "exemplar_boxes": [[x0, y0, x1, y1]], '
            '"exemplar_labels": [1]}; every key optional, but points, a box or a text',
        },
        "text": {"type": "string", "description": "The text, as a field of its own."},
    },
    required=["file"],
    other={"application/json": ImageRequest.model_json_schema()},
)


_RESPONSES = {
    409: {
        "model": ErrorBody,
        "description": "A text where no concept detector is configured (`detector_unavailable`).",
    },
    **ERROR_RESPONSES,
}


@router.post(
    "/segment", response_model=ImageSegmentation, openapi_extra=_BODY, responses=_RESPONSES
)
async def segment(request: Request, service: Service) -> ImageSegmentation:
    """Masks with scores for one image (multipart `file` + `prompts`, or base64 JSON): SAM 2's
    for points or a box (`masks`), the concept detector's for a text (`instances`, every
    instance of it), or both."""
    image, body = await _read(
        request, service.settings.max_image_bytes, service.settings.max_json_bytes
    )
    prompt = _prompt(body) if body.points or body.box is not None else None
    if prompt is None and body.text is None:
        raise InvalidRequestError("an image request needs points, a box or a text")
    return await service.segment_image(image, prompt, body.query(), body.normalized)


async def _read(request: Request, limit: int, json_limit: int) -> tuple[bytes, ImagePrompt]:
    """The image (at most ``limit`` bytes; base64 JSON proportionally more, plus the JSON
    body's own ``json_limit``) and its prompt."""
    kind = media_type(request)
    if kind == "application/json":
        body = await read_json(request, ImageRequest, limit * 4 // 3 + json_limit)
        try:
            image = base64.b64decode(body.image, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("image is not valid base64") from None
        return image, body
    if kind == "multipart/form-data":
        async with limited_form(request, limit, BodyTooLargeError) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequestError("multipart field 'file' with the image is missing")
            try:
                prompts = json.loads(str(form.get("prompts") or "{}"))
            except json.JSONDecodeError:
                raise InvalidRequestError("form field 'prompts' is not JSON") from None
            if isinstance(prompts, dict) and (text := form.get("text")) is not None:
                prompts["text"] = str(text)
            return await upload.read(), validated(ImagePrompt, prompts)
    raise UnsupportedMediaError("send the image as multipart/form-data or base64 JSON")


def _prompt(body: ImagePrompt) -> Prompt:
    fields = body.model_dump(include={"points", "labels", "box", "normalized"})
    return validated(Prompt, {"frame_index": 0, "obj_id": 1, **fields})

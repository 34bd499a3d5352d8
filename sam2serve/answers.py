"""How an answer is read: a body as its typed result, an error answer as its exception (with
``Retry-After``), a propagation event as a frame, an object re-detection started, the summary,
or the error that ended it. Both
clients share it; no I/O happens here (a body is read before it is parsed)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from sam2serve.errors import APIError, error_for
from sam2serve.models import FrameMasks, Health, ObjectAdded, PropagationSummary

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
# What a propagation stream carries: a frame's masks (each after the objects re-detection
# started on it), then the summary that ends it.
Event = FrameMasks | ObjectAdded | PropagationSummary


def as_model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def field_of(name: str, adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    """One field of a JSON body, e.g. the list inside ``{"objects": [...]}``."""
    return lambda response: adapter.validate_python(response.json()[name])


def no_content(_: httpx.Response) -> None:
    return None


def content(response: httpx.Response) -> bytes:
    return response.content


def health_of(response: httpx.Response) -> Health:
    """The health report; a 503 that is not one (a proxy's page) is raised as its error."""
    try:
        return Health.model_validate_json(response.content)
    except ValidationError:
        if response.is_success:
            raise
        raise error_of(response) from None


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date from now."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def error_of(response: httpx.Response) -> APIError:
    """The exception for an error answer whose body has been read.

    A body that is not the contract's error (a proxy's HTML page) keeps its first 200
    characters as the message."""
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
        details = body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:200] or response.reason_phrase, {}
    return error_for(response.status_code, code, message, details, retry_after_s(response))


def event_of(line: str | bytes) -> Event:
    """One NDJSON line or WebSocket message: a frame, an object re-detection started, or the
    summary that ends the stream.

    An ``error`` event (the stream's last) is raised as its exception."""
    event = json.loads(line)
    kind = event.get("type")
    if kind == "frame":
        return FrameMasks.model_validate(event)
    if kind == "object_added":
        return ObjectAdded.model_validate(event)
    if kind == "done":
        return PropagationSummary.model_validate(event)
    if kind == "error":
        error = event.get("error") or {}
        raise error_for(
            None,
            str(error.get("code", "internal_error")),
            str(error.get("message", "propagation failed")),
            error.get("details") or {},
        )
    raise APIError(f"unknown propagation event {kind!r}", code="unknown_event")

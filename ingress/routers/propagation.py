"""Propagation: streamed as NDJSON (one line per frame, then done) or summarised as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from deployments.protocol import PropagationDone, PropagationEvent, PropagationRequest
from ingress.errors import error_body, status_of, unwrap
from ingress.routers.deps import Service, bearer_key
from ingress.schemas import (
    ERROR_RESPONSES,
    CancelResult,
    PropagationSummary,
    SessionId,
)
from ingress.uploads import LimitedBodyRoute

router = APIRouter(
    prefix="/api/v1/sessions/{session_id}", tags=["propagation"], route_class=LimitedBodyRoute
)
NDJSON = "application/x-ndjson"
_STREAM = {
    200: {
        "description": "JSON summary, or with `Accept: application/x-ndjson` one JSON object "
        'per line: `{"type": "frame", ...}` per frame, then `{"type": "done", ...}` (or '
        '`{"type": "error", ...}`).',
        "content": {NDJSON: {"schema": {"type": "string"}}},
    },
    409: {"description": "A propagation is already running on the session."},
    **ERROR_RESPONSES,
}


@router.post("/propagate", response_model=PropagationSummary, responses=_STREAM)
async def propagate(
    session_id: SessionId,
    service: Service,
    request: PropagationRequest | None = None,
    accept: str = Header("application/json"),
):
    """Propagate the prompts through the video (default: both ways from the earliest prompt)."""
    events = await service.propagate(session_id, request or PropagationRequest())
    if NDJSON in accept:
        return StreamingResponse(_ndjson(events), media_type=NDJSON)
    try:
        async for event in events:
            if isinstance(event, PropagationDone):
                return PropagationSummary(**event.model_dump(exclude={"type"}))
    finally:
        await events.aclose()  # marks the session ready in the store at once
    raise RuntimeError("propagation ended without its summary")


@router.post("/propagate/cancel", response_model=CancelResult, responses=ERROR_RESPONSES)
async def cancel_propagation(session_id: SessionId, service: Service) -> CancelResult:
    """Stop the running propagation after its current frame."""
    return CancelResult(cancelled=await service.cancel_propagation(session_id))


@router.websocket("/propagate/ws")
async def propagate_ws(websocket: WebSocket, session_id: SessionId) -> None:
    """The client sends the propagation request as JSON; the server sends the NDJSON stream's
    messages, one per WebSocket message, then closes. A client that disconnects stops the
    propagation after the frame being computed."""
    await websocket.accept()
    try:
        service = websocket.app.state.service.for_caller(bearer_key(websocket))
        request = PropagationRequest.model_validate(await websocket.receive_json())
        events = await service.propagate(session_id, request)
    except WebSocketDisconnect:
        return
    except (ValidationError, ValueError) as exc:
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        await _close_with_error(websocket, "validation_error", message, 422)
        return
    except Exception as exc:
        error = unwrap(exc)
        await _close_with_error(websocket, *_describe(error), status_of(error))
        return
    await _stream(websocket, events)


async def _stream(websocket: WebSocket, events: AsyncIterator[PropagationEvent]) -> None:
    """Send events while watching the socket: a disconnect cancels the propagation."""

    async def send_all() -> None:
        async for event in events:
            await websocket.send_text(event.model_dump_json())

    sender = asyncio.create_task(send_all())
    watcher = asyncio.create_task(websocket.receive())
    done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if sender not in done:  # the client left (or spoke out of turn): stop
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        await events.aclose()
        return
    watcher.cancel()
    if (exc := sender.exception()) is not None:
        error = unwrap(exc)
        await _close_with_error(websocket, *_describe(error), status_of(error))
        return
    await websocket.close()


async def _close_with_error(websocket: WebSocket, code: str, message: str, status: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(json.dumps({"type": "error", **error_body(code, message)}))
        await websocket.close(code=4000 + status)


def _describe(error: BaseException) -> tuple[str, str]:
    return getattr(error, "code", "internal_error"), getattr(
        error, "message", "internal server error"
    )


async def _ndjson(events: AsyncIterator[PropagationEvent]) -> AsyncIterator[str]:
    """Each event as one line, as soon as it arrives; a failure becomes the last line."""
    try:
        async for event in events:
            yield event.model_dump_json() + "\n"
    except Exception as exc:  # the 200 is sent: report in-band, as the contract says
        yield json.dumps({"type": "error", **error_body(*_describe(unwrap(exc)))}) + "\n"

"""Propagation: streamed as NDJSON (one line per frame, then done) or summarised as JSON.

Errors in the streams (NDJSON once the 200 is sent, WebSocket) are answered in-band as the
contract says, through ``errors.reject`` like every other error: counted in
``sam2_rejected_requests`` by code, and logged with their traceback when unexpected."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from deployments.protocol import PropagationDone, PropagationRequest
from deployments.protocol.concepts import PropagationStreamEvent
from ingress.errors import Rejection, count_rejection, error_body, reject
from ingress.routers.deps import Service, bearer_key
from ingress.schemas import (
    ERROR_RESPONSES,
    CancelResult,
    ErrorBody,
    PropagationSummary,
    SessionId,
)
from ingress.uploads import LimitedBodyRoute

logger = logging.getLogger("ray.serve")
router = APIRouter(
    prefix="/api/v1/sessions/{session_id}", tags=["propagation"], route_class=LimitedBodyRoute
)
NDJSON = "application/x-ndjson"
_STREAM = {
    200: {
        "description": "JSON summary, or with `Accept: application/x-ndjson` one JSON object "
        'per line: `{"type": "frame", ...}` per frame, then `{"type": "done", ...}` (or '
        '`{"type": "error", ...}`). With `redetect`, an `{"type": "object_added", '
        '"frame_index", "obj_id", "name", "category", "detector_score"}` line comes before '
        "the frame where re-detection started that object.",
        "content": {NDJSON: {"schema": {"type": "string"}}},
    },
    409: {
        "model": ErrorBody,
        "description": "A propagation is already running on the session; or `redetect` where "
        "no concept detector is configured (`detector_unavailable`).",
    },
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
        try:
            request = PropagationRequest.model_validate(await websocket.receive_json())
        except ValueError as exc:  # not JSON, or not a propagation request (ValidationError)
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            count_rejection("validation_error")
            await _close_with_error(websocket, Rejection("validation_error", message, {}, 422))
            return
        events = await service.propagate(session_id, request)
    except WebSocketDisconnect:
        return
    except Exception as exc:
        await _close_with_error(websocket, reject(exc))
        return
    await _stream(websocket, events)


async def _stream(websocket: WebSocket, events: AsyncIterator[PropagationStreamEvent]) -> None:
    """Send events while watching the socket: a disconnect cancels the propagation."""

    async def send_all() -> None:
        async for event in events:
            await websocket.send_text(event.model_dump_json())

    sender = asyncio.create_task(send_all())
    watcher = asyncio.create_task(websocket.receive())
    done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if sender not in done:  # the client left (or spoke out of turn): stop
        sender.cancel()
        try:
            await sender
        except asyncio.CancelledError:
            pass
        except Exception:  # it failed as the client left: no one to tell, but not unseen
            logger.warning("a propagation stream failed as its client left", exc_info=True)
        await events.aclose()
        return
    watcher.cancel()
    if (exc := sender.exception()) is not None:
        await _close_with_error(websocket, reject(exc))
        return
    await websocket.close()


async def _close_with_error(websocket: WebSocket, rejection: Rejection) -> None:
    message = json.dumps({"type": "error", **error_body(rejection.code, rejection.message)})
    try:
        await websocket.send_text(message)
        await websocket.close(code=4000 + rejection.status)
    except Exception:  # expected: the client left meanwhile (the error is counted already)
        logger.debug("a propagation error found its client gone", exc_info=True)


async def _ndjson(events: AsyncIterator[PropagationStreamEvent]) -> AsyncIterator[str]:
    """Each event as one line, as soon as it arrives; a failure becomes the last line."""
    try:
        async for event in events:
            yield event.model_dump_json() + "\n"
    except Exception as exc:  # the 200 is sent: report in-band, as the contract says
        rejection = reject(exc)
        yield json.dumps({"type": "error", **error_body(rejection.code, rejection.message)}) + "\n"

"""Propagation: streamed as NDJSON (one line per frame, then done) or summarised as JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from deployments.engine import PropagationDone, PropagationEvent, PropagationRequest
from ingress.errors import error_body, unwrap
from ingress.routers.deps import Service
from ingress.routers.sessions import _ERRORS
from ingress.schemas import CancelResult, PropagationSummary

router = APIRouter(prefix="/api/v1/sessions/{session_id}", tags=["propagation"])
NDJSON = "application/x-ndjson"
_STREAM = {
    200: {
        "description": "JSON summary, or with `Accept: application/x-ndjson` one JSON object "
        'per line: `{"type": "frame", ...}` per frame, then `{"type": "done", ...}` (or '
        '`{"type": "error", ...}`).',
        "content": {NDJSON: {"schema": {"type": "string"}}},
    },
    409: {"description": "A propagation is already running on the session."},
    **_ERRORS,
}


@router.post("/propagate", response_model=PropagationSummary, responses=_STREAM)
async def propagate(
    session_id: str,
    service: Service,
    request: PropagationRequest | None = None,
    accept: str = Header("application/json"),
):
    """Propagate the prompts through the video (default: both ways from the earliest prompt)."""
    events = await service.propagate(session_id, request or PropagationRequest())
    if NDJSON in accept:
        return StreamingResponse(_ndjson(events), media_type=NDJSON)
    async for event in events:
        if isinstance(event, PropagationDone):
            return PropagationSummary(**event.model_dump(exclude={"type"}))
    raise RuntimeError("propagation ended without its summary")


@router.post("/propagate/cancel", response_model=CancelResult, responses=_ERRORS)
async def cancel_propagation(session_id: str, service: Service) -> CancelResult:
    """Stop the running propagation after its current frame."""
    return CancelResult(cancelled=await service.cancel_propagation(session_id))


async def _ndjson(events: AsyncIterator[PropagationEvent]) -> AsyncIterator[str]:
    """Each event as one line, as soon as it arrives; a failure becomes the last line."""
    try:
        async for event in events:
            yield event.model_dump_json() + "\n"
    except Exception as exc:  # the 200 is sent: report in-band, as the contract says
        error = unwrap(exc)
        code = getattr(error, "code", "internal_error")
        message = getattr(error, "message", "internal server error")
        yield json.dumps({"type": "error", **error_body(code, message)}) + "\n"

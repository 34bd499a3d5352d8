"""No silent errors: a propagation stream that fails after its 200 (NDJSON) or on its
WebSocket answers in-band as the contract says, and the failure is counted in
``sam2_rejected_requests`` by code; an unexpected one is also logged with its traceback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from deployments.protocol import DeadlineExceededError, PropagationRequest
from ingress import errors
from ingress.app import create_app
from ingress.routers.propagation import _ndjson


class Counted:
    """Stands in for the ``sam2_rejected_requests`` counter."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def inc(self, tags: dict[str, str]) -> None:
        self.codes.append(tags["code"])


@pytest.fixture
def counted(monkeypatch) -> Counted:
    counter = Counted()
    monkeypatch.setattr(errors, "_rejected", counter)
    return counter


@pytest.fixture
def logged(monkeypatch) -> mock.Mock:
    logger = mock.Mock()
    monkeypatch.setattr(errors, "logger", logger)
    return logger


async def failing(error: BaseException) -> AsyncIterator[Any]:
    """A propagation stream that fails before its first event."""
    raise error
    yield  # an async generator


async def lines(error: BaseException) -> list[dict]:
    return [json.loads(line) async for line in _ndjson(failing(error))]


async def test_an_unexpected_ndjson_failure_is_logged_and_counted(counted, logged):
    bug = KeyError("frame")
    assert await lines(bug) == [
        {
            "type": "error",
            "error": {"code": "internal_error", "message": "internal server error", "details": {}},
        }
    ]
    assert counted.codes == ["internal_error"]
    logged.exception.assert_called_once()
    assert logged.exception.call_args.kwargs["exc_info"] is bug


async def test_an_expected_ndjson_failure_is_counted_by_its_code(counted, logged):
    [line] = await lines(DeadlineExceededError("too long", budget_s=1))
    assert line["error"]["code"] == "deadline_exceeded"
    assert counted.codes == ["deadline_exceeded"]
    logged.exception.assert_not_called()


class StreamingService:
    """A service whose propagation starts, then fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def for_caller(self, _key: str | None) -> StreamingService:
        return self

    async def propagate(self, _session_id: str, _request: PropagationRequest):
        return failing(self.error)


def test_a_websocket_failure_is_answered_logged_and_counted(counted, logged):
    app = create_app()
    app.state.service = StreamingService(RuntimeError("boom"))
    with TestClient(app).websocket_connect("/api/v1/sessions/abcdefgh12345678/propagate/ws") as ws:
        ws.send_json({})
        message = ws.receive_json()
        closed = ws.receive()
    assert message["type"] == "error" and message["error"]["code"] == "internal_error"
    assert closed["code"] == 4500
    assert counted.codes == ["internal_error"]
    logged.exception.assert_called_once()


def test_a_websocket_request_that_does_not_validate_is_counted(counted, logged):
    app = create_app()
    app.state.service = StreamingService(RuntimeError("never reached"))
    with TestClient(app).websocket_connect("/api/v1/sessions/abcdefgh12345678/propagate/ws") as ws:
        ws.send_json({"direction": "sideways"})
        message = ws.receive_json()
    assert message["error"]["code"] == "validation_error"
    assert counted.codes == ["validation_error"]
    logged.exception.assert_not_called()

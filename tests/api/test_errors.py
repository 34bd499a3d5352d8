"""One table maps the project's errors to the contract's statuses (pure logic)."""

from __future__ import annotations

import json
import pickle

import pytest
import redis.exceptions

from deployments.protocol import errors as e
from ingress.errors import error_response, status_of, unwrap
from session_store import StoreError
from session_store.redis_store import RedisSessionStore


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (e.NotFoundError("x"), 404),
        (e.InvalidPromptError("x"), 422),
        (e.FrameOutOfRangeError("x"), 422),
        (e.InvalidRequestError("x"), 422),
        (e.BadVideoError("x"), 400),
        (e.ForbiddenPathError("x"), 403),
        (e.VideoTooLargeError("x"), 413),
        (e.UnsupportedMediaError("x"), 415),
        (e.ConflictError("x"), 409),
        (e.CapacityError("x"), 503),
        (e.SessionUnavailableError("x"), 503),
        (e.DeadlineExceededError("x"), 504),
    ],
)
def test_status_of_each_error(error, status):
    assert status_of(error) == status


def test_response_body_and_retry_after():
    response = error_response(e.CapacityError("full", max_sessions=3), retry_after_s=9)
    assert response.status_code == 503 and response.headers["Retry-After"] == "9"
    body = json.loads(response.body)
    assert body == {
        "error": {"code": "no_capacity", "message": "full", "details": {"max_sessions": 3}}
    }


def test_errors_keep_their_details_across_pickling():
    error = pickle.loads(pickle.dumps(e.FrameOutOfRangeError("out", frame_index=9)))
    assert (type(error), error.message, error.details) == (
        e.FrameOutOfRangeError,
        "out",
        {"frame_index": 9},
    )


def test_unexpected_errors_are_500_without_internals():
    response = error_response(ValueError("secret internals"), retry_after_s=1)
    assert response.status_code == 500 and b"secret" not in response.body
    assert unwrap(ValueError("x")).args == ("x",)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.TimeoutError("slow"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        redis.exceptions.ConnectionError("refused"),
    ],
)
async def test_store_failures_are_503_with_retry_after(error, monkeypatch):
    """A Redis failure leaves the store as its own ``StoreError`` (the ingress never sees
    Redis's classes), which the ingress answers 503 with Retry-After."""
    # never connects: the call fails first
    store = RedisSessionStore("redis://127.0.0.1:1", retries=0, retry_base_s=0.01, retry_cap_s=0.01)

    async def fail(*_):
        raise error

    monkeypatch.setattr(store._redis, "hgetall", fail)
    with pytest.raises(StoreError) as failed:
        await store.get("s")
    await store.close()
    failed = pickle.loads(pickle.dumps(failed.value))  # as it crosses from a replica
    response = error_response(failed, retry_after_s=4)
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    body = json.loads(response.body)["error"]
    assert body["code"] == "store_unavailable"
    assert body["message"] == f"the session store failed ({type(error).__name__}); retry"


def test_bodies_past_their_limit_are_413():
    assert status_of(e.BodyTooLargeError("x")) == 413

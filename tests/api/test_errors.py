"""One table maps the project's errors to the contract's statuses (pure logic)."""

from __future__ import annotations

import json
import pickle

import pytest
import redis.exceptions

from deployments.protocol import errors as e
from ingress.errors import error_response, status_of, unwrap


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
def test_store_failures_are_503_with_retry_after(error):
    response = error_response(error, retry_after_s=4)
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    assert json.loads(response.body)["error"]["code"] == "store_unavailable"


def test_bodies_past_their_limit_are_413():
    assert status_of(e.BodyTooLargeError("x")) == 413

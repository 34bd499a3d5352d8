"""The one place that turns errors into the contract's error body and HTTP status.

Errors raised in a replica reach the ingress wrapped by Ray (``RayTaskError``); they are
unwrapped here, so every route simply lets them propagate. The session store's failures arrive
as ``session_store.StoreError`` (the store translates its backend's errors), so this module
knows the store, not Redis.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.metrics import Counter
from starlette.exceptions import HTTPException

from deployments.protocol import errors as e
from session_store import StoreError

logger = logging.getLogger("ray.serve")

STATUS: dict[type[e.EngineError], int] = {
    e.UnauthorizedError: 401,
    e.NotFoundError: 404,
    e.InvalidRequestError: 422,
    e.BadVideoError: 400,
    e.ForbiddenPathError: 403,
    e.VideoTooLargeError: 413,
    e.UnsupportedMediaError: 415,
    e.ConflictError: 409,
    e.CapacityError: 503,
    e.SessionUnavailableError: 503,
    e.StoreUnavailableError: 503,
    e.ObjectStoreUnavailableError: 503,
    e.DeadlineExceededError: 504,
    e.DetectorLostError: 503,
    e.ModelLoadError: 503,
}
_RETRY_LATER = {503}

_rejected = Counter(
    "sam2_rejected_requests", "Requests answered with an error, by code.", tag_keys=("code",)
)


def unwrap(error: BaseException) -> BaseException:
    """The replica's own exception inside Ray's wrapper; Ray failures as project errors."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    if isinstance(error, RayActorError):
        return e.SessionUnavailableError("the SAM 2 replica holding this session stopped")
    if isinstance(error, StoreError):
        return e.StoreUnavailableError(f"the session store failed ({error.kind}); retry")
    if isinstance(error, BackPressureError):
        return e.CapacityError("the SAM 2 replicas are overloaded; try again later")
    return error


def status_of(error: BaseException) -> int:
    """The status of the nearest mapped class; 500 for anything unmapped."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


class Rejection(NamedTuple):
    """How the contract answers an error: its code, message, details and HTTP status."""

    code: str
    message: str
    details: dict[str, Any]
    status: int

    def body(self) -> dict:
        return error_body(self.code, self.message, self.details)


def reject(error: BaseException) -> Rejection:
    """The answer to an error, whichever way it reaches the client (a response, an NDJSON
    line, a WebSocket message). Every one is counted in ``sam2_rejected_requests`` by code; one
    that is not a project error is a bug: logged with its traceback, answered 500
    ``internal_error``."""
    error = unwrap(error)
    if not isinstance(error, e.EngineError):
        logger.exception("unexpected error", exc_info=error)
        _rejected.inc(tags={"code": "internal_error"})
        return Rejection("internal_error", "internal server error", {}, 500)
    _rejected.inc(tags={"code": error.code})
    return Rejection(error.code, error.message, _jsonable(error.details), status_of(error))


def count_rejection(code: str) -> None:
    """Count an answer refused before it reached a route (request validation)."""
    _rejected.inc(tags={"code": code})


def error_response(error: BaseException, retry_after_s: int) -> JSONResponse:
    """The contract's response for any exception (500 only for our own bugs)."""
    rejection = reject(error)
    headers = {"Retry-After": str(retry_after_s)} if rejection.status in _RETRY_LATER else None
    if rejection.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(rejection.body(), status_code=rejection.status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on the app (Retry-After comes from the service's settings)."""

    async def on_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(error, request.app.state.service.settings.retry_after_s)

    async def on_validation(_: Request, error: RequestValidationError) -> JSONResponse:
        count_rejection("validation_error")
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in error.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        return JSONResponse(
            error_body("validation_error", message, {"errors": errors}), status_code=422
        )

    async def on_http(_: Request, error: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: e.BodyTooLargeError.code}
        code = codes.get(error.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(error.detail)),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    handled = (e.EngineError, RayTaskError, RayActorError, BackPressureError, StoreError)
    for error_type in (*handled, Exception):
        app.add_exception_handler(error_type, on_error)


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | str | bool | None | list) else str(v)
        for k, v in details.items()
    }

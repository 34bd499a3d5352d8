"""One exception class per error ``code`` the server sends, under a common base.

The server answers errors as ``{"error": {"code", "message", "details"}}`` with a status
(``ingress/errors.py``); its classes form a hierarchy (``deployments/protocol/errors.py``) that
this one mirrors, so ``except InvalidRequestError`` also catches a ``frame_out_of_range``, and
``except ServiceUnavailableError`` every 503 whatever its code."""

from __future__ import annotations

from typing import Any, ClassVar


class Sam2ServeError(Exception):
    """Base of everything this client raises on purpose."""


class TransportError(Sam2ServeError):
    """The server could not be reached, or the connection broke mid-answer."""


class APIError(Sam2ServeError):
    """An error answer of the server: its HTTP status and the contract's error body."""

    code: ClassVar[str] = "api_error"
    default_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.default_status if status is None else status
        self.code = code or type(self).code  # the server's code, also one this client lacks
        self.details = details or {}
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"


class BadRequestError(APIError):
    code = "bad_request"
    default_status = 400


class BadVideoError(BadRequestError):
    """Bytes that are not a readable video: not a video, no frames, truncated."""

    code = "bad_video"


class BadImageError(BadVideoError):
    code = "bad_image"


class UnauthorizedError(APIError):
    """A missing or unknown API key."""

    code = "unauthorized"
    default_status = 401


class ForbiddenPathError(APIError):
    """A server-side video path outside the server's VIDEO_ROOT."""

    code = "forbidden_path"
    default_status = 403


class NotFoundError(APIError):
    """An unknown session, object or frame (or another API key's session)."""

    code = "not_found"
    default_status = 404


class MethodNotAllowedError(APIError):
    code = "method_not_allowed"
    default_status = 405


class ConflictError(APIError):
    """The session is busy with work that excludes this request (a running propagation)."""

    code = "conflict"
    default_status = 409


class SourceChangedError(ConflictError):
    """The session's server-side video changed or went away after the session was created."""

    code = "source_changed"


class DetectorUnavailableError(ConflictError):
    """A text prompt where the server runs no concept detector; ``details["setting"]`` names
    the server setting that would."""

    code = "detector_unavailable"


class TooLargeError(APIError):
    """Too many bytes, seconds or frames."""

    code = "too_large"
    default_status = 413


class VideoTooLargeError(TooLargeError):
    code = "video_too_large"


class UploadTooLargeError(VideoTooLargeError):
    code = "upload_too_large"


class BodyTooLargeError(VideoTooLargeError):
    code = "body_too_large"


class UnsupportedMediaError(APIError):
    code = "unsupported_media_type"
    default_status = 415


class InvalidRequestError(APIError):
    """A well-formed request the server cannot apply (out-of-range values, nothing to do)."""

    code = "invalid_request"
    default_status = 422


class InvalidPromptError(InvalidRequestError):
    code = "invalid_prompt"


class TooManyObjectsError(InvalidPromptError):
    """A prompt (a text's instances) past the session's object limit; nothing was added."""

    code = "too_many_objects"


class FrameOutOfRangeError(InvalidRequestError):
    code = "frame_out_of_range"


class RequestValidationError(InvalidRequestError):
    """The request did not match the API's schema; ``details["errors"]`` lists where."""

    code = "validation_error"


class InternalServerError(APIError):
    code = "internal_error"
    default_status = 500


class ServiceUnavailableError(APIError):
    """Retry later (``retry_after_s`` says when): the client retries these itself first."""

    code = "service_unavailable"
    default_status = 503


class CapacityError(ServiceUnavailableError):
    """No free session slot on any replica."""

    code = "no_capacity"


class SessionUnavailableError(ServiceUnavailableError):
    """The session's replica is gone; the session is being rebuilt on another one."""

    code = "session_unavailable"


class StoreUnavailableError(ServiceUnavailableError):
    code = "store_unavailable"


class ModelLoadError(ServiceUnavailableError):
    code = "model_load_failed"


class DetectorLostError(ServiceUnavailableError):
    """The concept detector's replica stopped while answering; nothing changed, so the client
    sends the request again."""

    code = "detector_lost"


class DeadlineExceededError(APIError):
    """The request ran past the server's time budget for it."""

    code = "deadline_exceeded"
    default_status = 504


def _leaves(cls: type[APIError]) -> list[type[APIError]]:
    return [cls, *(leaf for sub in cls.__subclasses__() for leaf in _leaves(sub))]


ERROR_CLASSES: dict[str, type[APIError]] = {cls.code: cls for cls in _leaves(APIError)}
# The base class of each status, for a code this client does not know yet.
_STATUS_CLASSES: dict[int, type[APIError]] = {
    cls.default_status: cls for cls in APIError.__subclasses__()
}


def error_for(
    status: int | None,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retry_after_s: float | None = None,
) -> APIError:
    """The exception for an error answer: its code's class, else its status's, else APIError.

    ``status`` is None for errors reported inside a stream (NDJSON's last line), which carry
    only the body: the class's own status stands in."""
    cls = ERROR_CLASSES.get(code) or _STATUS_CLASSES.get(status or 0, APIError)
    return cls(message, status=status, code=code, details=details, retry_after_s=retry_after_s)

"""sam2-serve's one exception hierarchy. Each class carries a stable snake_case ``code``; the
ingress maps classes to HTTP statuses in one place (``ingress/errors.py``). The engine raises
most of them; the serving layer raises the rest (capacity, routing, limits, deadlines)."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "engine_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple:
        """Keep the details when Ray carries the error from a replica to the ingress."""
        return _unpickle, (type(self), self.message, self.details)


class UnauthorizedError(EngineError):
    """A missing or unknown API key."""

    code = "unauthorized"


class NotFoundError(EngineError):
    """An unknown session, object or frame."""

    code = "not_found"


class InvalidRequestError(EngineError):
    """A well-formed request the engine cannot apply (bad option, nothing to propagate)."""

    code = "invalid_request"


class InvalidPromptError(InvalidRequestError):
    """A prompt that is malformed or lies outside the frame."""

    code = "invalid_prompt"


class TooManyObjectsError(InvalidPromptError):
    """A prompt that would take the session past its object limit (``max_objects``); nothing
    of it was applied."""

    code = "too_many_objects"


class FrameOutOfRangeError(InvalidRequestError):
    """A frame index outside the session's video."""

    code = "frame_out_of_range"


class BadVideoError(EngineError):
    """Bytes that are not a readable video: not a video, no frames, truncated."""

    code = "bad_video"


class BadImageError(BadVideoError):
    """Bytes that are not a readable image."""

    code = "bad_image"


class VideoTooLargeError(EngineError):
    """A video with more frames than the service accepts."""

    code = "video_too_large"


class CapacityError(EngineError):
    """No free session slot; try again later."""

    code = "no_capacity"


class ConflictError(EngineError):
    """The session is busy with work that excludes this request (a running propagation)."""

    code = "conflict"


class SourceChangedError(ConflictError):
    """The session's server-side video changed or went away after the session was created:
    its frames would no longer be the ones its masks were computed on."""

    code = "source_changed"


class DetectorUnavailableError(ConflictError):
    """A text prompt where no concept detector is configured (``details["setting"]`` names
    the setting that turns it on)."""

    code = "detector_unavailable"


class DetectorLostError(EngineError):
    """The concept detector's replica stopped or could not be reached while answering; the
    session is as it was before the request, so the same request can be sent again."""

    code = "detector_lost"


class ModelLoadError(EngineError):
    """The model cannot be built: unknown name, missing checkpoint, bad config."""

    code = "model_load_failed"


class SessionUnavailableError(EngineError):
    """The replica that holds the session is gone or not reachable right now."""

    code = "session_unavailable"


class StoreUnavailableError(EngineError):
    """The session store or the mask database did not answer as it should (restarting, timing
    out, refusing)."""

    code = "store_unavailable"


class ObjectStoreUnavailableError(EngineError):
    """The object store holding a session's video (``s3://``) did not answer; a later read tries
    again. Not a StoreUnavailableError: the session's state and log are intact."""

    code = "object_store_unavailable"


class ForbiddenPathError(EngineError):
    """A server-side path outside the allowed root."""

    code = "forbidden_path"


class UploadTooLargeError(VideoTooLargeError):
    """An upload larger than the service accepts (refused while it streams)."""

    code = "upload_too_large"


class BodyTooLargeError(VideoTooLargeError):
    """A request body (JSON, an image) larger than the service accepts: refused from its
    Content-Length or while it streams, before it is parsed."""

    code = "body_too_large"


class UnsupportedMediaError(EngineError):
    """A request body of a media type the route does not take."""

    code = "unsupported_media_type"


class DeadlineExceededError(EngineError):
    """The request ran past its time budget."""

    code = "deadline_exceeded"


def _unpickle(cls: type[EngineError], message: str, details: dict[str, Any]) -> EngineError:
    return cls(message, **details)

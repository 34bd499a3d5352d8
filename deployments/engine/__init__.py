"""The SAM 2 session engine: plain Python, no Ray or HTTP. Its public interface."""

import os

# SAM 2's propagate_in_video draws a tqdm bar on every call; a server logs none. tqdm reads
# this when it is first imported, so it is set before sam2 is.
os.environ.setdefault("TQDM_DISABLE", "1")

from deployments.engine.config import EngineSettings
from deployments.engine.engine import SessionEngine, new_session_id
from deployments.engine.errors import (
    BadImageError,
    BadVideoError,
    CapacityError,
    ConflictError,
    DeadlineExceededError,
    EngineError,
    ForbiddenPathError,
    FrameOutOfRangeError,
    InvalidPromptError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    SessionUnavailableError,
    UnauthorizedError,
    UnsupportedMediaError,
    UploadTooLargeError,
    VideoTooLargeError,
)
from deployments.engine.models import REGISTRY, ModelSpec
from deployments.engine.session import Session
from deployments.engine.types import (
    RLE,
    FrameMask,
    FrameMasks,
    ObjectInfo,
    Prompt,
    PromptResult,
    PropagationDone,
    PropagationEvent,
    PropagationProgress,
    PropagationRequest,
    SessionInfo,
    SourceVideo,
    VideoInfo,
    VideoOptions,
)

__all__ = [
    "REGISTRY",
    "RLE",
    "BadImageError",
    "BadVideoError",
    "CapacityError",
    "ConflictError",
    "DeadlineExceededError",
    "EngineError",
    "EngineSettings",
    "ForbiddenPathError",
    "FrameMask",
    "FrameMasks",
    "FrameOutOfRangeError",
    "InvalidPromptError",
    "InvalidRequestError",
    "ModelLoadError",
    "ModelSpec",
    "NotFoundError",
    "ObjectInfo",
    "Prompt",
    "PromptResult",
    "PropagationDone",
    "PropagationEvent",
    "PropagationProgress",
    "PropagationRequest",
    "Session",
    "SessionEngine",
    "SessionInfo",
    "SessionUnavailableError",
    "SourceVideo",
    "UnauthorizedError",
    "UnsupportedMediaError",
    "UploadTooLargeError",
    "VideoInfo",
    "VideoOptions",
    "VideoTooLargeError",
    "new_session_id",
]

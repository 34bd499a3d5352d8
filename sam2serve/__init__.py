"""Python client and command line of sam2-serve, the SAM 2 video segmentation service.

    from sam2serve import Client

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        session = client.create_session("clip.mp4")
        client.add_prompt(session.session_id, 0, points=[(320, 180)], labels=[1])
        with client.propagate_stream(session.session_id) as frames:
            for frame in frames:
                print(frame.frame_index, [m.area for m in frame.masks])

Light on purpose (httpx, websockets, pydantic, numpy, tqdm; pycocotools only when a mask is
decoded): it imports nothing of the server, so it runs without torch or Ray."""

from sam2serve.async_client import AsyncClient
from sam2serve.async_transport import AsyncPropagationStream
from sam2serve.client import Client
from sam2serve.errors import (
    ERROR_CLASSES,
    APIError,
    BadImageError,
    BadRequestError,
    BadVideoError,
    BodyTooLargeError,
    CapacityError,
    ConflictError,
    DeadlineExceededError,
    ForbiddenPathError,
    FrameOutOfRangeError,
    InternalServerError,
    InvalidPromptError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelLoadError,
    NotFoundError,
    RequestValidationError,
    Sam2ServeError,
    ServiceUnavailableError,
    SessionUnavailableError,
    SourceChangedError,
    StoreUnavailableError,
    TooLargeError,
    TransportError,
    UnauthorizedError,
    UnsupportedMediaError,
    UploadTooLargeError,
    VideoTooLargeError,
)
from sam2serve.models import (
    RLE,
    ClearResult,
    Direction,
    ExportFormat,
    FrameMask,
    FrameMasks,
    Health,
    ImageSegmentation,
    MaskPage,
    ModelEntry,
    ModelList,
    ObjectInfo,
    Preparation,
    PromptResult,
    PropagationProgress,
    PropagationSummary,
    ReviewFrame,
    Session,
    SourceVideo,
    Timeline,
    TimelineReview,
    VideoInfo,
)
from sam2serve.retry import RetryPolicy
from sam2serve.transport import PropagationStream

__all__ = [
    "ERROR_CLASSES",
    "RLE",
    "APIError",
    "AsyncClient",
    "AsyncPropagationStream",
    "BadImageError",
    "BadRequestError",
    "BadVideoError",
    "BodyTooLargeError",
    "CapacityError",
    "ClearResult",
    "Client",
    "ConflictError",
    "DeadlineExceededError",
    "Direction",
    "ExportFormat",
    "ForbiddenPathError",
    "FrameMask",
    "FrameMasks",
    "FrameOutOfRangeError",
    "Health",
    "ImageSegmentation",
    "InternalServerError",
    "InvalidPromptError",
    "InvalidRequestError",
    "MaskPage",
    "MethodNotAllowedError",
    "ModelEntry",
    "ModelList",
    "ModelLoadError",
    "NotFoundError",
    "ObjectInfo",
    "Preparation",
    "PromptResult",
    "PropagationProgress",
    "PropagationStream",
    "PropagationSummary",
    "RequestValidationError",
    "RetryPolicy",
    "ReviewFrame",
    "Sam2ServeError",
    "ServiceUnavailableError",
    "Session",
    "SessionUnavailableError",
    "SourceChangedError",
    "SourceVideo",
    "StoreUnavailableError",
    "Timeline",
    "TimelineReview",
    "TooLargeError",
    "TransportError",
    "UnauthorizedError",
    "UnsupportedMediaError",
    "UploadTooLargeError",
    "VideoInfo",
    "VideoTooLargeError",
]

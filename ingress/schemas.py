"""HTTP request and response schemas of the contract (``shared/api/CONTRACT.md``). Bodies the
engine already types (prompts, propagation requests, masks, objects) are its models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deployments.protocol import (
    SESSION_ID_PATTERN,
    FrameMask,
    ObjectInfo,
    Preparation,
    PropagationDone,
    PropagationProgress,
    VideoInfo,
    VideoOptions,
)
from deployments.protocol.concepts import Box, ConceptQuery, DetectedInstance, TextPrompt
from deployments.protocol.settings import CompileMode

# A session id in a path: its format is checked at the edge, so a malformed id (e.g. one that
# names a store key of another kind, "<id>:log") never reaches the store.
SessionId = Annotated[
    str, PathParam(pattern=SESSION_ID_PATTERN, description="8-64 characters of [A-Za-z0-9_-].")
]
# Largest frame index a request may name (frames are stored as 64-bit integers).
MAX_INDEX = 2**31 - 1


class Session(BaseModel):
    session_id: str
    status: Literal["ready", "restoring", "propagating"]
    model: str
    created_at: datetime
    expires_at: datetime
    replica: str | None
    video: VideoInfo
    objects: list[ObjectInfo]
    propagation: PropagationProgress | None = None
    preparation: Preparation | None = Field(
        None,
        description="Background work on the video while the session is already usable; null "
        "when none runs (none does today).",
    )


class SessionList(BaseModel):
    sessions: list[Session]


class ServerVideo(VideoOptions):
    """Create a session from a video already on the server, under ``VIDEO_ROOT``
    (``video_path``), or from an object in an allow-listed bucket (``video_url``): one of them."""

    video_path: str | None = Field(
        None, min_length=1, max_length=4096, description="Path relative to the server's VIDEO_ROOT."
    )
    video_url: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="s3://bucket/key of a video in a bucket the server allows (s3_buckets).",
    )
    model: str | None = Field(None, description="A name from GET /api/v1/models.")

    @field_validator("video_path", "video_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("video_path and video_url must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ServerVideo:
        if (self.video_path is None) == (self.video_url is None):
            raise ValueError("name the video with one of video_path and video_url")
        return self


class ObjectList(BaseModel):
    objects: list[ObjectInfo]


class ObjectPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    category: str | None = Field(None, max_length=200)


class FrameMasksResponse(BaseModel):
    """Masks of one frame (clearing prompts)."""

    frame_index: int
    masks: list[FrameMask]


class MasksResponse(BaseModel):
    frames: list[FrameMasksResponse]
    next_start: int | None = Field(
        None, description="Where the next page starts (pass it as `start`); null: no more."
    )


class PropagationSummary(BaseModel):
    frames: int
    elapsed_s: float
    cancelled: bool
    exact: bool = Field(True, description=PropagationDone.model_fields["exact"].description)
    approximate_frames: list[tuple[int, int]] = Field(
        default_factory=list,
        description=PropagationDone.model_fields["approximate_frames"].description,
    )


class CancelResult(BaseModel):
    cancelled: bool


class Health(BaseModel):
    ready: bool
    replicas: int
    active_sessions: int
    capacity: int
    queued_requests: int
    gpu_memory_mb: float | None


class ModelEntry(BaseModel):
    name: str
    config: str
    checkpoint: str
    loaded: bool = Field(description="Whether SAM 2 replicas run this model.")
    replicas: list[str] = Field(default_factory=list, description="Replicas that loaded it.")
    compute_dtype: Literal["float32", "bfloat16"] | None = Field(
        None, description="The dtype its replicas compute in (setting compute_dtype); if loaded."
    )
    device: str | None = Field(None, description="The device its replicas run on; if loaded.")
    compile: CompileMode | None = Field(
        None, description="What its replicas compiled (setting compile); if loaded."
    )
    warmup_s: float | None = Field(
        None,
        description="Seconds a replica of it spent warming up at start, compiling included "
        "(the first replica listed); if loaded.",
    )


class ModelList(BaseModel):
    default: str
    models: list[ModelEntry]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


class ReviewFrame(BaseModel):
    frame_index: int
    obj_id: int
    reason: Literal["low_score", "area_jump", "lost"]
    value: float


class ReviewResponse(BaseModel):
    frames: list[ReviewFrame]


# What a prompt on points, a box or a mask names, and a text prompt does not.
_GEOMETRY = ("obj_id", "points", "labels", "box", "mask", "clear_old_points")


class TextPromptRequest(ConceptQuery):
    """A text prompt on one frame: the concept detector finds every instance of ``text`` there;
    each that matches no object of that category becomes a new object (``name`` = the text and
    an ordinal, ``category`` = the text), prompted into SAM 2 with its mask. No points, box or
    mask: those are separate prompts."""

    frame_index: int = Field(ge=0, le=MAX_INDEX)
    normalized: bool = Field(False, description="Exemplar boxes in 0..1 instead of pixels.")

    @model_validator(mode="before")
    @classmethod
    def _text_alone(cls, data: object) -> object:
        if isinstance(data, dict) and (named := [k for k in _GEOMETRY if k in data]):
            raise ValueError(
                f"a text prompt takes no {', '.join(named)}: send points, a box or a mask as a "
                "prompt of their own (on an object the text prompt created, say)"
            )
        return data

    def prompt(self) -> TextPrompt:
        query = ConceptQuery.model_validate(self.model_dump(include=set(ConceptQuery.model_fields)))
        return TextPrompt(frame_index=self.frame_index, query=query, normalized=self.normalized)


class ImagePrompt(BaseModel):
    """Points (+/- labels) and/or a box on one image for SAM 2, and/or a text for the concept
    detector (with optional exemplar boxes), which answers every instance of it."""

    model_config = ConfigDict(extra="forbid")

    points: list[tuple[float, float]] | None = None
    labels: list[Literal[0, 1]] | None = None
    box: tuple[float, float, float, float] | None = None
    normalized: bool = False
    text: str | None = Field(
        None, min_length=1, description="Every instance of this concept, in `instances`."
    )
    exemplar_boxes: list[Box] | None = Field(
        None, description="With `text`: [x0, y0, x1, y1] boxes of examples of the concept."
    )
    exemplar_labels: list[Literal[0, 1]] | None = Field(
        None, description="With `text`: 1 an example, 0 a counter-example; default all 1."
    )

    @model_validator(mode="after")
    def _exemplars_with_a_text(self) -> ImagePrompt:
        if self.text is None and (self.exemplar_boxes or self.exemplar_labels):
            raise ValueError("exemplar_boxes and exemplar_labels go with a text")
        if self.text is not None:
            try:
                self.query()
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"]) from None
        return self

    def query(self) -> ConceptQuery | None:
        """The text part for the concept detector; None without a text."""
        if self.text is None:
            return None
        return ConceptQuery(
            text=self.text,
            exemplar_boxes=self.exemplar_boxes or [],
            exemplar_labels=self.exemplar_labels,
        )


class ImageRequest(ImagePrompt):
    image: str = Field(description="The image (JPEG, PNG...) as base64.")


class ImageSegmentation(BaseModel):
    masks: list[FrameMask] = Field(description="SAM 2's masks for the points or box.")
    width: int
    height: int
    inference_ms: float
    instances: list[DetectedInstance] = Field(
        default_factory=list,
        description="Every instance of `text`, best score first (empty without a text).",
    )


# The error statuses every route may answer, documented with the contract's error body.
ERROR_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 422, 503, 504)
}


BINARY = {"type": "string", "format": "binary"}


def request_body(form: dict[str, dict], required: list[str], other: dict[str, dict]) -> dict:
    """OpenAPI for a route that reads its body itself: a multipart form with ``form`` fields
    (``required`` ones), or another media type, each as ``{media type: schema}``."""
    multipart = {"type": "object", "required": required, "properties": form}
    content = {"multipart/form-data": {"schema": multipart}} | {
        media: {"schema": schema} for media, schema in other.items()
    }
    return {"requestBody": {"required": True, "content": content}}

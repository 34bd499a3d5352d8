"""Typed requests and results shared by the ingress and the replicas. They follow
``shared/api/CONTRACT.md`` so the ingress serves them as they are (frame space, COCO RLE,
snake_case). Torch-free: pydantic and the standard library only."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ObjectId = Annotated[int, Field(ge=1, le=255, description="1..255: fits a DAVIS palette PNG.")]
Point = tuple[float, float]
# Where a stored mask came from: a prompt on its frame, or a propagation through it.
MaskSource = Literal["prompt", "propagation"]

# Session ids: new ones are 128 random bits, URL-safe (22 characters).
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
_CLOCK = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)$")


def new_session_id() -> str:
    """128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


class RLE(BaseModel):
    """COCO run-length encoding as pycocotools writes it."""

    size: tuple[int, int] = Field(description="[height, width]")
    counts: str


class FrameMask(BaseModel):
    """One object's mask on one frame."""

    obj_id: int
    rle: RLE
    bbox: tuple[int, int, int, int] = Field(description="[x, y, w, h] in frame space")
    area: int
    score: float = Field(description="Presence probability: sigmoid of SAM 2's object score.")
    source: MaskSource | None = Field(
        None,
        description="`prompt`: the object was prompted on this frame; `propagation`: tracked "
        "there. Null for masks stored before the service recorded it.",
    )
    propagation_id: int | None = Field(
        None, description="The session's propagation (1, 2, ...) that computed it; prompts: null."
    )


class Prompt(BaseModel):
    """Points (+/- labels), a box and/or a mask for one object on one frame.

    A mask is applied first; points and box then refine it. A box replaces the object's earlier
    prompts on that frame (SAM 2 takes a box only as the first prompt); points are added to the
    earlier ones unless ``clear_old_points``.
    """

    model_config = ConfigDict(extra="forbid")

    frame_index: int = Field(ge=0)
    obj_id: ObjectId | None = Field(None, description="Omitted: a new object with the next id.")
    points: list[Point] | None = None
    labels: list[Literal[0, 1]] | None = Field(None, description="One per point; default all 1.")
    box: tuple[float, float, float, float] | None = Field(None, description="[x0, y0, x1, y1]")
    mask: RLE | None = None
    normalized: bool = Field(False, description="Coordinates in 0..1 instead of pixels.")
    clear_old_points: bool = False

    @model_validator(mode="after")
    def _check(self) -> Prompt:
        if not (self.points or self.box is not None or self.mask is not None):
            raise ValueError("a prompt needs at least one of points, box or mask")
        if self.labels is not None and len(self.labels) != len(self.points or []):
            raise ValueError("labels must have one entry per point")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise ValueError("box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        return self


class Redetect(BaseModel):
    """A propagation option: run the concept detector on the text every ``every_n_frames``
    frames of each pass; instances that match no tracked object start new objects from that
    frame on (CONTRACT.md, wave-3 Additions)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    every_n_frames: int = Field(ge=1)


class PropagationRequest(BaseModel):
    """Which way to propagate, from where, how far, and for which objects."""

    model_config = ConfigDict(extra="forbid")

    direction: Literal["forward", "backward", "both"] = "both"
    start_frame_index: int | None = Field(None, ge=0, description="Default: earliest prompt.")
    max_frames: int | None = Field(None, ge=1, description="Frames past the start, each way.")
    obj_ids: list[ObjectId] | None = Field(None, description="Default: every prompted object.")
    redetect: Redetect | None = Field(
        None, description="Find new instances of a text as the propagation goes (a detector)."
    )


class VideoOptions(BaseModel):
    """How to cut and shrink the uploaded video into the session's frames."""

    model_config = ConfigDict(extra="forbid")

    start_time: float | None = Field(None, ge=0, description="Seconds or 'HH:MM:SS[.ms]'.")
    end_time: float | None = Field(None, gt=0, description="Seconds or 'HH:MM:SS[.ms]'.")
    max_side: int | None = Field(None, ge=16, description="Shrink so the longer side fits.")
    frame_stride: int = Field(1, ge=1, description="Keep every n-th frame.")

    @field_validator("start_time", "end_time", mode="before")
    @classmethod
    def _parse_clock(cls, value: object) -> object:
        if isinstance(value, str) and (match := _CLOCK.match(value.strip())):
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return value

    @model_validator(mode="after")
    def _check(self) -> VideoOptions:
        start, end = self.start_time, self.end_time
        if start is not None and end is not None and end <= start:
            raise ValueError("end_time must be after start_time")
        return self


class SourceVideo(BaseModel):
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float


class VideoInfo(BaseModel):
    """The session's processed frames (its frame space) and where they came from."""

    num_frames: int
    fps: float
    width: int
    height: int
    start_time: float
    end_time: float
    frame_stride: int
    source: SourceVideo


class ObjectInfo(BaseModel):
    obj_id: int
    name: str | None = None
    category: str | None = None
    prompt_frames: list[int] = Field(default_factory=list)
    masked_frames: int = 0


class PropagationProgress(BaseModel):
    direction: Literal["forward", "backward", "both"]
    done_frames: int
    total_frames: int


class Preparation(BaseModel):
    """Background work on the session's video that runs while the session is already usable."""

    stage: str = Field(
        description="The background step under way. The service runs none today (its model "
        "reads each session's source video as it is); the field stays for the contract."
    )
    done_frames: int
    total_frames: int


class SessionInfo(BaseModel):
    session_id: str
    status: Literal["ready", "restoring", "propagating"]
    model: str
    created_at: datetime
    video: VideoInfo
    objects: list[ObjectInfo]
    propagation: PropagationProgress | None = None
    preparation: Preparation | None = None


_EXACT = (
    "True: the masks stock SAM 2 computes for the same operations, bit for bit given the "
    "weights, frames and dtype. False: SAM 2 memory this needed had left the session's "
    "retention window, and the service used its documented approximation."
)


class PromptResult(BaseModel):
    """The masks of every object on the prompted frame after the prompt."""

    frame_index: int
    obj_id: int
    masks: list[FrameMask]
    exact: bool = Field(True, description=_EXACT)


class ClearResult(BaseModel):
    """The masks of every object on a frame after clearing prompts there."""

    frame_index: int
    masks: list[FrameMask]
    exact: bool = Field(True, description=_EXACT)


class FrameMasks(BaseModel):
    """Every object's mask on one frame; a propagation yields one per frame."""

    type: Literal["frame"] = "frame"
    frame_index: int
    masks: list[FrameMask]


class MaskPage(BaseModel):
    """Frames with masks from a range, at most a page of them, and where the next page starts."""

    frames: list[FrameMasks]
    next_start: int | None = Field(description="First frame of the next page; null: no more.")


class PropagationDone(BaseModel):
    """The last event of a propagation."""

    type: Literal["done"] = "done"
    frames: int
    elapsed_s: float
    cancelled: bool
    exact: bool = Field(True, description=_EXACT + " False if any frame used it.")
    approximate_frames: list[tuple[int, int]] = Field(
        default_factory=list,
        description="Runs [first, last] of frames whose masks used the approximation.",
    )


PropagationEvent = FrameMasks | PropagationDone


ExportFormat = Literal["coco", "png_zip", "davis", "mp4"]
EXPORTS: dict[str, tuple[str, str]] = {  # format -> (media type, file suffix)
    "coco": ("application/json", ".json"),
    "png_zip": ("application/zip", ".zip"),
    "davis": ("application/zip", ".zip"),
    "mp4": ("video/mp4", ".mp4"),
}


ReviewReason = Literal["low_score", "area_jump", "lost"]


@dataclass(frozen=True)
class ReviewItem:
    frame_index: int
    obj_id: int
    reason: ReviewReason
    value: float


class TimelineMark(BaseModel):
    """A frame of one object worth a look (a review item of that object)."""

    frame_index: int
    reason: ReviewReason
    value: float


class ObjectTimeline(BaseModel):
    """What a timeline of one object needs, without its masks: where it has masks, where it was
    prompted, and where it needs a look."""

    obj_id: int
    ranges: list[tuple[int, int]] = Field(
        description="Runs of consecutive frames with a non-empty mask, [first, last] inclusive."
    )
    prompt_frames: list[int]
    review: list[TimelineMark] = Field(description="The object's review items, worst first.")

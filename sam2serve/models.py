"""Typed results of the sam2-serve HTTP API (``shared/api/CONTRACT.md``, v1 and its Additions).

The client's own models, not the server's: annotators install this package without torch or
Ray. Every model ignores fields it does not know, as the contract asks of clients, so a newer
server does not break an older client."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np


# What ``exact`` says on results (the server's contract, CONTRACT.md wave-3 Additions).
_EXACT = (
    "True: stock SAM 2's masks for the same operations, bit for bit. False: memory this needed "
    "had left the session's retention window, and the server approximated."
)


class ApiModel(BaseModel):
    """Base of every result: unknown fields are ignored, known ones validated."""

    model_config = ConfigDict(extra="ignore")


class RLE(ApiModel):
    """A mask as COCO run-length encoding, as pycocotools writes it."""

    size: tuple[int, int] = Field(description="[height, width]")
    counts: str

    def to_numpy(self) -> np.ndarray:
        """The mask as a boolean array of shape (height, width).

        pycocotools is imported here, on request, so listing sessions never loads it."""
        from pycocotools import mask as mask_utils

        encoded = {"size": list(self.size), "counts": self.counts.encode()}
        return mask_utils.decode(encoded).astype(bool)


class FrameMask(ApiModel):
    """One object's mask on one frame, in the session's frame space."""

    obj_id: int
    rle: RLE
    bbox: tuple[int, int, int, int] = Field(description="[x, y, w, h]")
    area: int
    score: float = Field(description="Presence probability of the object on the frame.")
    source: Literal["prompt", "propagation"] | None = None
    propagation_id: int | None = None

    def to_numpy(self) -> np.ndarray:
        return self.rle.to_numpy()


class SourceVideo(ApiModel):
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float


class VideoInfo(ApiModel):
    """The session's processed frames (its frame space) and the source they came from."""

    num_frames: int
    fps: float
    width: int
    height: int
    start_time: float
    end_time: float
    frame_stride: int
    source: SourceVideo


class ObjectInfo(ApiModel):
    obj_id: int
    name: str | None = None
    category: str | None = None
    prompt_frames: list[int] = Field(default_factory=list)
    masked_frames: int = 0


class PropagationProgress(ApiModel):
    direction: Literal["forward", "backward", "both"]
    done_frames: int
    total_frames: int


class Preparation(ApiModel):
    """Background work on the video that runs while the session is already usable."""

    stage: str
    done_frames: int
    total_frames: int


class Session(ApiModel):
    session_id: str
    status: Literal["ready", "restoring", "propagating"]
    model: str
    created_at: datetime
    expires_at: datetime
    replica: str | None = None
    video: VideoInfo
    objects: list[ObjectInfo] = Field(default_factory=list)
    propagation: PropagationProgress | None = None
    preparation: Preparation | None = None


class PromptResult(ApiModel):
    """Every object's mask on the prompted frame after the prompt."""

    frame_index: int
    obj_id: int
    masks: list[FrameMask]
    exact: bool = Field(True, description=_EXACT)


class ConceptObject(ApiModel):
    """An instance a text prompt found: a new object, or (``matched``) the existing object of
    that category its mask overlaps."""

    obj_id: int
    name: str | None = None
    category: str | None = None
    detector_score: float
    matched: bool


class TextPromptResult(ApiModel):
    """The instances of a text on the prompted frame, and every object's mask there after."""

    frame_index: int
    objects: list[ConceptObject]
    masks: list[FrameMask]
    exact: bool = Field(True, description=_EXACT)


class Redetect(ApiModel):
    """A propagation option: run the concept detector on ``text`` every ``every_n_frames``
    frames; instances that match no tracked object start new objects from there on."""

    text: str
    every_n_frames: int


class ObjectAdded(ApiModel):
    """Re-detection started an object on ``frame_index`` during a propagation."""

    frame_index: int
    obj_id: int
    name: str | None = None
    category: str | None = None
    detector_score: float


class FrameMasks(ApiModel):
    """Every object's mask on one frame: a propagation event, a page entry, a cleared frame."""

    frame_index: int
    masks: list[FrameMask]


class ClearResult(FrameMasks):
    """Every object's mask on a frame after clearing prompts there."""

    exact: bool = Field(True, description=_EXACT)


class MaskPage(ApiModel):
    frames: list[FrameMasks]
    next_start: int | None = Field(None, description="Where the next page starts; None: done.")


class PropagationSummary(ApiModel):
    """How a propagation ended: the JSON answer, and the last event of a stream."""

    frames: int
    elapsed_s: float
    cancelled: bool
    exact: bool = Field(True, description=_EXACT + " False if any frame used it.")
    approximate_frames: list[tuple[int, int]] = Field(
        default_factory=list, description="Runs [first, last] of frames that used it."
    )


class ReviewFrame(ApiModel):
    frame_index: int
    obj_id: int
    reason: Literal["low_score", "area_jump", "lost"]
    value: float


class TimelineReview(ApiModel):
    frame_index: int
    reason: Literal["low_score", "area_jump", "lost"]
    value: float


class Timeline(ApiModel):
    """An object's frames as runs, enough to draw an hour-long timeline without its masks."""

    obj_id: int
    ranges: list[tuple[int, int]] = Field(description="[first, last] runs of frames with a mask")
    prompt_frames: list[int]
    review: list[TimelineReview]


class Instance(ApiModel):
    """One instance of a text on an image, as the concept detector found it."""

    rle: RLE
    score: float
    box: tuple[float, float, float, float] = Field(description="[x0, y0, x1, y1] in pixels")

    def to_numpy(self) -> np.ndarray:
        return self.rle.to_numpy()


class ImageSegmentation(ApiModel):
    masks: list[FrameMask] = Field(description="SAM 2's, for the points or box.")
    width: int
    height: int
    inference_ms: float
    instances: list[Instance] = Field(
        default_factory=list, description="The detector's, for the text; best first."
    )


class Health(ApiModel):
    ready: bool
    replicas: int
    active_sessions: int
    capacity: int
    queued_requests: int
    gpu_memory_mb: float | None = None


class ModelEntry(ApiModel):
    name: str
    config: str
    checkpoint: str
    loaded: bool
    replicas: list[str] = Field(default_factory=list)
    compute_dtype: str | None = None
    device: str | None = None
    compile: str | None = None
    warmup_s: float | None = None


class ModelList(ApiModel):
    default: str
    models: list[ModelEntry]


ExportFormat = Literal["coco", "png_zip", "davis", "mp4"]
Direction = Literal["forward", "backward", "both"]

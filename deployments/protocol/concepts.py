"""Text (concept) prompts: what the ingress, the SAM 2 replicas and the concept detector pass
each other (CONTRACT.md, wave-3 Additions: text prompts, re-detection, text on images).

A concept detector (SAM 3) finds every instance of a text on one frame; the SAM 2 session makes
each instance that matches no object of that category a new object, prompted with the
instance's mask through the same path as any mask prompt. Torch-free: pydantic only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ``Redetect`` lives beside PropagationRequest, whose option it is; re-exported here.
from deployments.protocol.types import RLE, FrameMask, PropagationEvent, Redetect

__all__ = [
    "Box",
    "ConceptObject",
    "ConceptQuery",
    "DetectedInstance",
    "ObjectAdded",
    "PropagationStreamEvent",
    "Redetect",
    "TextPrompt",
    "TextPromptResult",
]

# Box corners in frame space, or in 0..1 with ``normalized``.
Box = tuple[float, float, float, float]


class ConceptQuery(BaseModel):
    """A text, optionally with exemplar boxes (positive or negative) on the same frame, as SAM 3
    takes them. Length limits are the server's (``DetectorSettings``), checked where the
    settings are known."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="The concept, e.g. `grasper`.")
    exemplar_boxes: list[Box] = Field(
        default_factory=list, description="[x0, y0, x1, y1] boxes of examples on the frame."
    )
    exemplar_labels: list[Literal[0, 1]] | None = Field(
        None, description="1 an example of the concept, 0 a counter-example; default all 1."
    )

    @model_validator(mode="after")
    def _check(self) -> ConceptQuery:
        if not self.text.strip():
            raise ValueError("text must not be blank")
        if self.exemplar_labels is not None and len(self.exemplar_labels) != len(
            self.exemplar_boxes
        ):
            raise ValueError("exemplar_labels must have one entry per exemplar box")
        for x0, y0, x1, y1 in self.exemplar_boxes:
            if not (x0 < x1 and y0 < y1):
                raise ValueError("exemplar boxes must be [x0, y0, x1, y1] with x0 < x1, y0 < y1")
        return self

    def labels(self) -> list[int]:
        """One label per exemplar box (default positive)."""
        return list(self.exemplar_labels or [1] * len(self.exemplar_boxes))


class DetectedInstance(BaseModel):
    """One instance the detector found on a frame, in that frame's space."""

    rle: RLE
    box: Box = Field(description="[x0, y0, x1, y1] in frame pixels")
    score: float = Field(description="Detector score: instance probability x presence.")


class TextPrompt(BaseModel):
    """``POST .../prompts`` with a text: detect on ``frame_index``, add what is new."""

    model_config = ConfigDict(extra="forbid")

    frame_index: int = Field(ge=0)
    query: ConceptQuery
    normalized: bool = Field(False, description="Exemplar boxes in 0..1 instead of pixels.")


class ConceptObject(BaseModel):
    """An instance of a text prompt's answer: a new object, or the object it matched."""

    obj_id: int
    name: str | None
    category: str | None
    detector_score: float
    matched: bool = Field(description="True: an existing object of the category (not added).")


class TextPromptResult(BaseModel):
    """The instances found, and the masks of every object on the frame afterwards."""

    frame_index: int
    objects: list[ConceptObject]
    masks: list[FrameMask]
    exact: bool = True


class ObjectAdded(BaseModel):
    """A propagation event: re-detection started an object on ``frame_index`` (sent before that
    frame's masks)."""

    type: Literal["object_added"] = "object_added"
    frame_index: int
    obj_id: int
    name: str | None
    category: str | None
    detector_score: float


# What a propagation streams once it may re-detect: ``ObjectAdded`` events among the frames.
PropagationStreamEvent = PropagationEvent | ObjectAdded

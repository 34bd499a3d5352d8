"""``DetectorApi``: every method the SAM 2 replicas and the ingress call on the concept detector
(the ``ConceptDetector`` deployment, SAM 3), typed.

``deployments.concept_detector.DetectorReplica`` implements it (a test compares the
signatures); callers reach it through a view of its Serve handle typed as this Protocol
(``deployments.detection`` in the SAM 2 replicas, ``ingress.detector_calls`` in the ingress),
so method names come from here, never from string literals. A SAM 2 replica sends the frame it
already decoded (frame space), never the video; the ingress sends an image's bytes.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import numpy as np

from deployments.protocol.concepts import ConceptQuery, DetectedInstance
from deployments.protocol.errors import DetectorUnavailableError

# The setting that turns the detector on (``ServiceSettings.detector``).
DETECTOR_SETTING = "detector"


class DetectorApi(Protocol):
    """The concept detector as its callers see it. Every argument is keyword-only."""

    async def detect(self, *, frame: np.ndarray, query: ConceptQuery) -> list[DetectedInstance]:
        """Every instance of ``query`` on ``frame`` (``[H, W, 3]`` uint8 RGB at its own size;
        exemplar boxes in its pixels), best score first, above the detector's score
        threshold."""
        ...

    async def detect_image(
        self, *, image: bytes, query: ConceptQuery, normalized: bool
    ) -> tuple[list[DetectedInstance], int, int, float]:
        """(instances, width, height, inference ms) of an encoded image (JPEG, PNG...);
        exemplar boxes in 0..1 with ``normalized``. BadImageError for bytes that are not an
        image."""
        ...

    async def status(self) -> dict[str, Any]:
        """The detector replica's weights, device, dtype, input size, score threshold, and
        its detections in flight (``in_flight``)."""
        ...


def not_configured() -> DetectorUnavailableError:
    """409 ``detector_unavailable``, naming the setting (in ``details``) that would run one."""
    return DetectorUnavailableError(
        f"no concept detector is configured on this server: set the {DETECTOR_SETTING!r} "
        "setting (or SAM2_SERVE_DETECTOR) to run one for text prompts",
        setting=DETECTOR_SETTING,
    )


def in_pixels(query: ConceptQuery, width: int, height: int) -> ConceptQuery:
    """``query`` with its exemplar boxes, given in 0..1 (``normalized``), in the pixels of a
    ``width`` x ``height`` frame: what the detector takes."""
    scale = (width, height, width, height)
    boxes = [tuple(v * s for v, s in zip(box, scale, strict=True)) for box in query.exemplar_boxes]
    return query.model_copy(update={"exemplar_boxes": boxes})


# Every method's name, for whatever addresses the detector by name.
DETECTOR_METHODS = frozenset(
    name
    for name, _ in inspect.getmembers(DetectorApi, inspect.isfunction)
    if not name.startswith("_")
)

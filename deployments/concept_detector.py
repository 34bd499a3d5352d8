"""``DetectorReplica``: the ``ConceptDetector`` Ray Serve deployment, a thin shell over one
``deployments.detector.ConceptDetector`` (SAM 3 through transformers).

It holds no session: SAM 2 replicas send it the frame they already decoded and track what it
finds; the ingress sends it an image for text on images. Forward passes run one at a time on
one thread (as SAM 2's model thread does), so the event loop stays free for Serve's health
checks and concurrent requests queue here, where autoscaling counts them. Masks leave as COCO
RLE (``DetectedInstance``), a few KB instead of a full-frame array.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from deployments.detector import ConceptDetector, Instance, load_detector
from deployments.protocol import BadImageError
from deployments.protocol.concepts import ConceptQuery, DetectedInstance
from deployments.protocol.detector_api import in_pixels
from deployments.protocol.settings import DetectorSettings

logger = logging.getLogger("ray.serve")


class DetectorReplica:
    """Implements ``deployments.protocol.DetectorApi``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = DetectorSettings(**settings)
        self.detector: ConceptDetector = load_detector(self.settings)
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector")
        self._in_flight = 0  # detections received and not yet answered
        logger.info(
            "concept detector: %s weights on %s in %s, input %d px",
            self.settings.weights,
            self.detector.device,
            self.detector.dtype,
            self.detector.spec.size,
        )

    async def detect(self, *, frame: np.ndarray, query: ConceptQuery) -> list[DetectedInstance]:
        return await self._detect(frame, query)

    async def detect_image(
        self, *, image: bytes, query: ConceptQuery, normalized: bool
    ) -> tuple[list[DetectedInstance], int, int, float]:
        rgb = _decode_rgb(image)
        height, width = rgb.shape[:2]
        if normalized:
            query = in_pixels(query, width, height)
        started = time.perf_counter()
        found = await self._detect(rgb, query)
        return found, width, height, round((time.perf_counter() - started) * 1000, 1)

    async def status(self) -> dict[str, Any]:
        return {
            "weights": self.settings.weights,
            "device": str(self.detector.device),
            "compute_dtype": str(self.detector.dtype).removeprefix("torch."),
            "image_size": self.detector.spec.size,
            "score_threshold": self.settings.score_threshold,
            "in_flight": self._in_flight,
        }

    async def _detect(self, frame: np.ndarray, query: ConceptQuery) -> list[DetectedInstance]:
        self._in_flight += 1
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._model_thread,
                lambda: self.detector.detect(
                    frame, query.text, query.exemplar_boxes, query.labels() or None
                ),
            )
        finally:
            self._in_flight -= 1
        return [_as_detected(instance) for instance in found]


def _as_detected(instance: Instance) -> DetectedInstance:
    rle = mask_utils.encode(np.asfortranarray(instance.mask.astype(np.uint8)))
    return DetectedInstance(
        rle={"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        box=instance.box,
        score=instance.score,
    )


def _decode_rgb(image: bytes) -> np.ndarray:
    """As the SAM 2 replicas decode images (``engine.video.decode_image``), without loading
    the SAM 2 engine here."""
    bgr = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadImageError("the upload is not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

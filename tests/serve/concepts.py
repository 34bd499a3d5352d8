"""The concept detector in the stack tests: its settings (transformers' real SAM 3 code at the
small random config) with a score threshold chosen on the test clip, since random weights give
arbitrary scores, and the detector itself called in the test process for the reference."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np

from deployments.detector import ConceptDetector, Instance, load_detector
from deployments.engine.decoder import to_rgb
from deployments.protocol.settings import DetectorSettings

# Slow enough (about 0.2 s a detection on one CPU thread) that a test can kill the detector's
# replica while it answers; small enough to keep the tests quick.
IMAGE_SIZE = 672


def detector_settings(score_threshold: float) -> dict[str, Any]:
    return {
        "weights": "random",
        "device": "cpu",
        "torch_threads": 1,
        "image_size": IMAGE_SIZE,
        "score_threshold": score_threshold,
    }


@cache
def reference_detector() -> ConceptDetector:
    """The detector the stack runs (same settings and seed), in this process; the threshold is
    passed per call."""
    return load_detector(DetectorSettings(**detector_settings(0.5)))


def session_frame(video: Path, index: int) -> np.ndarray:
    """Frame ``index`` of ``video`` as a session without ``max_side`` holds it (frame space),
    decoded as the replicas decode it."""
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return to_rgb(frame, (frame.width, frame.height))
    raise IndexError(index)


@dataclass(frozen=True)
class Concept:
    """A text, a frame, and the threshold that keeps ``count`` of its instances there."""

    text: str
    frame: np.ndarray
    threshold: float

    def instances(self, text: str | None = None) -> list[Instance]:
        """What the detector finds on the frame above the threshold."""
        return reference_detector().detect(
            self.frame, text or self.text, score_threshold=self.threshold
        )


def concept(video: Path, frame_index: int, text: str, count: int) -> Concept:
    """The threshold halfway between the ``count``-th and the next instance's score of
    ``text`` on the frame."""
    frame = session_frame(video, frame_index)
    scores = [i.score for i in reference_detector().detect(frame, text, score_threshold=0.0)]
    assert len(scores) > count, f"{text!r} gives {len(scores)} instances on the test frame"
    return Concept(text, frame, (scores[count - 1] + scores[count]) / 2)

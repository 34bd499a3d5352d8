"""The concept detector built once: transformers' real SAM 3 code at the small random config
(every part 64 wide, one or two layers, 224 px input), a tokenizer trained on a word list."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.detector import ConceptDetector, load_detector
from deployments.protocol.settings import DetectorSettings

TEST_IMAGE_SIZE = 224


def detector_settings(**overrides) -> DetectorSettings:
    values = dict(weights="random", device="cpu", torch_threads=2, image_size=TEST_IMAGE_SIZE)
    return DetectorSettings(**(values | overrides))


@pytest.fixture(scope="session")
def detector() -> ConceptDetector:
    return load_detector(detector_settings())


@pytest.fixture(scope="session")
def frame() -> np.ndarray:
    """96 x 160 RGB, not square (the detector gets frames at their own size): two shapes on
    a noisy background."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 60, size=(96, 160, 3), dtype=np.uint8)
    image[20:60, 15:55] = (220, 40, 40)
    yy, xx = np.mgrid[:96, :160]
    image[(yy - 50) ** 2 + (xx - 115) ** 2 < 20**2] = (40, 200, 90)
    return image

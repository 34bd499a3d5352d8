"""The frame reaches SAM 3 as ``Sam3ImageProcessor`` would give it: resized to the model's
square input like PIL's bilinear resize (which torch's antialiased resize follows), rounded to
8 bits, scaled and normalized with the checkpoint's mean and std."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deployments.detector.preprocessing import InputSpec, pixel_values

CPU = torch.device("cpu")


def test_a_frame_at_the_input_size_is_only_normalized():
    frame = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    spec = InputSpec(32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    values = pixel_values(frame, spec, CPU, torch.float32)[0].permute(1, 2, 0).numpy()
    expected = (frame / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(96, 160), (480, 640)])
def test_resize_follows_pils_bilinear_resize(shape):
    """Up (96 x 160) and down (480 x 640, antialiased) to 224: within one 8-bit level."""
    frame = np.random.default_rng(2).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(
        np.repeat(np.repeat(frame[::8, ::8], 8, 0), 8, 1)[: shape[0], : shape[1]]
    )
    values = pixel_values(frame, InputSpec(224), CPU, torch.float32)[0].permute(1, 2, 0).numpy()
    ours = np.rint((values * 0.5 + 0.5) * 255)
    pil = np.asarray(Image.fromarray(frame).resize((224, 224), Image.BILINEAR), dtype=np.float64)
    assert np.abs(ours - pil).max() <= 1

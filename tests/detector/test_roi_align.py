"""Our ``roi_align`` computes what ``torchvision.ops.roi_align`` computes with the arguments SAM 3
passes (scale 1, adaptive sampling, aligned=False). torchvision cannot be imported here, so the
reference is a scalar transcription of its CPU kernel (roi_align_kernel.cpp), plus cases whose
answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deployments.detector.roi_align import roi_align


def bilinear(plane: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision's bilinear_interpolate, for every channel of ``plane`` ([C, H, W])."""
    height, width = plane.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(plane.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[:, y_low, x_low]
        + hy * lx * plane[:, y_low, x_high]
        + ly * hx * plane[:, y_high, x_low]
        + ly * lx * plane[:, y_high, x_high]
    )


def reference(features: np.ndarray, image: int, box: list[float], size: int) -> np.ndarray:
    """torchvision's roi_align_forward_kernel_impl for one box, loop by loop."""
    x0, y0, x1, y1 = box
    roi_w, roi_h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    bin_h, bin_w = roi_h / size, roi_w / size
    grid_h, grid_w = math.ceil(roi_h / size), math.ceil(roi_w / size)
    count = max(grid_h * grid_w, 1)
    out = np.zeros((features.shape[1], size, size))
    for ph in range(size):
        for pw in range(size):
            total = np.zeros(features.shape[1])
            for iy in range(grid_h):
                y = y0 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x0 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    total += bilinear(features[image], y, x)
            out[:, ph, pw] = total / count
    return out


def test_matches_torchvisions_kernel_on_boxes_inside_across_and_outside_the_map():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 12, 16, generator=generator)
    boxes = [
        torch.tensor([[1.0, 2.0, 9.5, 7.25], [-3.0, -2.0, 5.0, 4.0], [0.2, 0.3, 0.6, 0.5]]),
        torch.tensor([[10.0, 6.0, 17.5, 13.0], [0.0, 0.0, 16.0, 12.0], [20.0, 1.0, 30.0, 5.0]]),
    ]
    pooled = roi_align(features, boxes, 7)
    expected = [
        reference(features.double().numpy(), image, box, 7)
        for image, image_boxes in enumerate(boxes)
        for box in image_boxes.tolist()
    ]
    assert pooled.shape == (6, 3, 7, 7)
    np.testing.assert_allclose(pooled.numpy(), np.stack(expected), rtol=1e-5, atol=1e-5)


def test_a_bilinear_function_pools_to_its_value_at_each_bin_centre():
    """Bilinear interpolation reproduces a + b*y + c*x + d*x*y exactly, and the mean of a
    regular grid of its samples is its value at the grid's centre."""
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    features = (0.5 + 2 * ys - 3 * xs + 0.25 * xs * ys)[None, None]
    x0, y0, x1, y1 = 2.5, 1.0, 17.0, 15.5  # 14.5 x 14.5: a 3 x 3 grid in each of 5 x 5 bins
    pooled = roi_align(features, [torch.tensor([[x0, y0, x1, y1]])], 5)[0, 0]
    centres_y = y0 + (torch.arange(5) + 0.5) * (y1 - y0) / 5
    centres_x = x0 + (torch.arange(5) + 0.5) * (x1 - x0) / 5
    cy, cx = torch.meshgrid(centres_y, centres_x, indexing="ij")
    torch.testing.assert_close(pooled, 0.5 + 2 * cy - 3 * cx + 0.25 * cx * cy, rtol=1e-5, atol=1e-4)


def test_a_box_beyond_the_map_pools_to_zero():
    features = torch.ones(1, 2, 8, 8)
    assert roi_align(features, [torch.tensor([[12.0, 12.0, 20.0, 20.0]])], 7).abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_the_features_dtype_and_takes_no_boxes(dtype):
    features = torch.randn(1, 4, 8, 8).to(dtype)
    assert roi_align(features, [torch.tensor([[1.0, 1.0, 5.0, 5.0]])], 7).dtype == dtype
    assert roi_align(features, [torch.zeros(0, 4)], 7).shape == (0, 4, 7, 7)

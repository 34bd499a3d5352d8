"""RoIAlign in plain torch: the one torchvision operator a SAM 3 forward calls (its geometry
encoder pools image features under each exemplar box). We keep torchvision out of the venv
(its 0.28 wheel cannot load its operators on our CPU torch), so this is ours, tested against a
scalar transcription of torchvision's algorithm (tests/detector/test_roi_align.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def roi_align(
    features: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int
) -> torch.Tensor:
    """``torchvision.ops.roi_align(features, boxes, output_size)`` with its defaults
    (``spatial_scale=1``, ``sampling_ratio=-1``, ``aligned=False``), as SAM 3 calls it.

    ``features`` is ``[B, C, H, W]``; ``boxes[b]`` is ``[K_b, 4]`` boxes ``x0, y0, x1, y1`` in
    feature-map pixels for image ``b``. Returns ``[sum K_b, C, output_size, output_size]`` in
    ``features``' dtype (computed in float32): each bin is the mean of ``ceil(roi_h /
    output_size) x ceil(roi_w / output_size)`` bilinear samples, a box at least one pixel wide
    and high, a sample beyond one pixel outside the map counting as zero.
    """
    pooled = []
    for image, image_boxes in zip(features.float(), boxes, strict=True):
        for box in image_boxes.float().tolist():
            pooled.append(_pool(image, box, output_size))
    if not pooled:
        return features.new_zeros((0, features.shape[1], output_size, output_size))
    return torch.stack(pooled).to(features.dtype)


def _pool(image: torch.Tensor, box: list[float], size: int) -> torch.Tensor:
    """One box over one ``[C, H, W]`` map. Samples form a grid, and bilinear weights and the
    outside-is-zero rule factor by axis, so the pooling is two interpolation matrices."""
    x0, y0, x1, y1 = box
    rows = _axis_weights(y0, max(y1 - y0, 1.0), size, image.shape[1], image.device)
    cols = _axis_weights(x0, max(x1 - x0, 1.0), size, image.shape[2], image.device)
    samples = torch.einsum("yh,chw,xw->cyx", rows, image, cols)
    grid_y, grid_x = rows.shape[0] // size, cols.shape[0] // size
    return samples.view(-1, size, grid_y, size, grid_x).mean(dim=(2, 4))


def _axis_weights(
    start: float, length: float, size: int, extent: int, device: torch.device
) -> torch.Tensor:
    """``[size * grid, extent]``: row ``i * grid + k`` holds the linear-interpolation weights of
    sample ``k`` of bin ``i`` along one axis (all zero when the sample lies beyond ``[-1,
    extent]``)."""
    grid = math.ceil(length / size)
    bin_length = length / size
    bins = torch.arange(size, device=device, dtype=torch.float32)[:, None]
    steps = torch.arange(grid, device=device, dtype=torch.float32)[None, :]
    coords = (start + bins * bin_length + (steps + 0.5) * bin_length / grid).flatten()
    inside = (coords >= -1.0) & (coords <= extent)
    coords = coords.clamp(min=0.0)
    low = coords.floor().long()
    at_edge = low >= extent - 1
    low = torch.where(at_edge, extent - 1, low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, 0.0, coords - low.float())
    weights = torch.zeros(coords.shape[0], extent, device=device)
    weights.scatter_add_(1, low[:, None], (1.0 - frac)[:, None])
    weights.scatter_add_(1, high[:, None], frac[:, None])
    return weights * inside[:, None]

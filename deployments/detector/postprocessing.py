"""From SAM 3's outputs to instances on the frame, as Meta's SAM 3 image processor does: a
query's score is its probability times the prompt's presence probability, queries above the
threshold are kept, masks are the mask logits upsampled to the frame (bilinear) above zero,
boxes are scaled to frame pixels (here also clipped to the frame). No NMS: SAM 3's queries
are one-to-one (DETR-style), and Meta's image path has none either."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Masks upsampled to the frame at once; bounds the float32 buffer (a 1080p mask is 8 MB).
UPSAMPLE_CHUNK = 8


@dataclass(frozen=True)
class Instance:
    """One instance of the prompt on the frame."""

    mask: np.ndarray
    """``[H, W]`` bool, at the frame's own size."""
    box: tuple[float, float, float, float]
    """``x0, y0, x1, y1`` in frame pixels, within the frame."""
    score: float
    """Query probability x presence probability, in [0, 1]."""


def instances(
    pred_logits: torch.Tensor,
    presence_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_masks: torch.Tensor,
    frame_hw: tuple[int, int],
    threshold: float,
) -> list[Instance]:
    """Instances of one image, best score first, from its ``[Q]`` query logits, ``[1]``
    presence logit, ``[Q, 4]`` normalized ``x0, y0, x1, y1`` boxes and ``[Q, h, w]`` mask
    logits. Kept: score above ``threshold`` and a mask that is not empty at the frame's size
    (an empty one gives SAM 2 nothing to track)."""
    scores = pred_logits.float().sigmoid() * presence_logits.float().sigmoid()
    kept = torch.nonzero(scores > threshold).flatten()
    kept = kept[torch.argsort(scores[kept], descending=True, stable=True)]
    height, width = frame_hw
    scale = pred_boxes.new_tensor([width, height, width, height], dtype=torch.float32)
    found = []
    for start in range(0, len(kept), UPSAMPLE_CHUNK):
        chunk = kept[start : start + UPSAMPLE_CHUNK]
        masks = _upsample(pred_masks[chunk].float(), height, width).cpu().numpy()
        boxes = torch.minimum((pred_boxes[chunk].float() * scale).clamp(min=0), scale)
        for query, mask, box in zip(chunk.tolist(), masks, boxes.tolist(), strict=True):
            if mask.any():
                found.append(Instance(mask=mask, box=tuple(box), score=float(scores[query])))
    return found


def _upsample(mask_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[K, h, w]`` logits -> ``[K, H, W]`` bool masks (upsampled logits above zero, i.e.
    probability above one half)."""
    upsampled = F.interpolate(
        mask_logits[None], size=(height, width), mode="bilinear", align_corners=False
    )
    return upsampled[0] > 0

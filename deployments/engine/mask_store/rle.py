"""Masks as COCO RLE (pycocotools): encoding a frame's object masks with bbox and area, decoding
one, and the IoU of two stored masks of one object (what ``iou_prev`` keeps)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from deployments.protocol.types import RLE, FrameMask, MaskSource

# A stored mask as its IoU needs it: RLE and area.
Stored = tuple[RLE, int]


def encode_masks(
    obj_ids: list[int],
    masks: np.ndarray,
    scores: list[float],
    sources: list[MaskSource] | None = None,
    propagation_id: int | None = None,
) -> list[FrameMask]:
    """``masks``: bool array [N, H, W], one per object id -> FrameMasks with RLE, bbox, area,
    and where each came from (``sources``, one per object; ``propagation_id`` for those that
    a propagation computed)."""
    if not obj_ids:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    return [
        FrameMask(
            obj_id=obj_id,
            rle=RLE(size=tuple(rle["size"]), counts=rle["counts"].decode("ascii")),
            bbox=tuple(round(v) for v in box),
            area=int(area),
            score=float(score),
            source=source,
            propagation_id=propagation_id if source == "propagation" else None,
        )
        for obj_id, rle, area, box, score, source in zip(
            obj_ids, rles, areas, boxes, scores, sources or [None] * len(obj_ids), strict=True
        )
    ]


def decode_mask(rle: RLE) -> np.ndarray:
    """An RLE as a bool [H, W] array."""
    return mask_utils.decode(coco(rle)).astype(bool)


def iou(a: Stored | None, b: Stored | None) -> float | None:
    """IoU of two masks of one object; None unless both exist and are non-empty."""
    if a is None or b is None or a[1] == 0 or b[1] == 0:
        return None
    if a[0].counts == b[0].counts:
        return 1.0
    return float(mask_utils.iou([coco(a[0])], [coco(b[0])], [0])[0][0])


def coco(rle: RLE) -> dict:
    return {"size": list(rle.size), "counts": rle.counts.encode("ascii")}

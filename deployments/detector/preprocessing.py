"""What SAM 3 is given: the frame resized and normalized as ``Sam3ImageProcessor`` does, the
text tokenized as ``Sam3Processor`` does, exemplar boxes normalized as it does. Written here
because transformers' image processor imports torchvision at module level; checked by
tests/detector. Bad prompts raise ``InvalidPromptError`` (422 at the ingress)."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from deployments.protocol.errors import InvalidPromptError

# Sam3ImageProcessor's defaults (IMAGENET_STANDARD_MEAN and _STD), which facebook/sam3 keeps.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class InputSpec:
    """The model's square input: side in pixels, per-channel mean and std (of [0, 1] values)."""

    size: int
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD


def read_input_spec(checkpoint_dir: Path, size: int) -> InputSpec:
    """The mean and std a checkpoint's processor config names (its ``image_processor`` part in
    a ``processor_config.json``), else the defaults; ``size`` is the model config's."""
    for name in PREPROCESSOR_FILES:
        path = checkpoint_dir / name
        if path.is_file():
            config = json.loads(path.read_text())
            config = config.get("image_processor", config)
            mean = tuple(config.get("image_mean", DEFAULT_MEAN))
            std = tuple(config.get("image_std", DEFAULT_STD))
            return InputSpec(size, mean, std)  # type: ignore[arg-type]
    return InputSpec(size)


def frame_size(frame_rgb: np.ndarray) -> tuple[int, int]:
    """``(H, W)`` of an ``[H, W, 3]`` uint8 RGB frame; ValueError for anything else (a caller's
    bug: frames come from the service's own decoder)."""
    if frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(
            f"expected an [H, W, 3] uint8 RGB frame, got {frame_rgb.shape} {frame_rgb.dtype}"
        )
    if frame_rgb.shape[0] == 0 or frame_rgb.shape[1] == 0:
        raise ValueError("the frame is empty")
    return frame_rgb.shape[0], frame_rgb.shape[1]


def pixel_values(
    frame_rgb: np.ndarray, spec: InputSpec, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``[1, 3, S, S]``: the whole frame resized to S x S (SAM 3 does not keep the aspect
    ratio), bilinear with antialiasing and rounded to 8 bits as the processor's uint8 resize is,
    then scaled to [0, 1] and normalized."""
    image = torch.tensor(frame_rgb, device=device).permute(2, 0, 1)[None].float()
    resized = F.interpolate(
        image, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=True
    )
    resized = resized.round().clamp(0, 255) / 255.0
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return ((resized - mean) / std).to(dtype)


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    context: int,
    max_chars: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, ``[1, context]``, padded to the text encoder's
    context as ``Sam3Processor`` pads them. Empty text, text over ``max_chars`` characters and
    text over ``context`` tokens (start and end included) raise InvalidPromptError."""
    if not text.strip():
        raise InvalidPromptError("the text prompt is empty", field="text")
    if len(text) > max_chars:
        raise InvalidPromptError(
            f"the text prompt is longer than {max_chars} characters",
            field="text",
            max_chars=max_chars,
        )
    encoded = tokenizer(text, padding="max_length", max_length=context, return_tensors="pt")
    tokens = encoded["input_ids"].shape[1]
    if tokens > context:
        raise InvalidPromptError(
            f"the text prompt is {tokens} tokens; the model reads at most {context}",
            field="text",
            tokens=tokens,
            max_tokens=context,
        )
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


def exemplar_prompts(
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int] | None,
    frame_hw: tuple[int, int],
    max_boxes: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Exemplar boxes ``[x0, y0, x1, y1]`` in frame pixels with labels 1 (positive) or 0
    (negative; default all positive) as SAM 3's inputs: ``[1, K, 4]`` normalized ``cx, cy, w,
    h`` and ``[1, K]`` labels; None for no boxes. A box that is not four finite numbers, is
    empty or leaves the frame, a label other than 0 or 1, a label count other than the box
    count, or more than ``max_boxes`` boxes raise InvalidPromptError."""
    if labels is not None and len(labels) != len(boxes):
        raise InvalidPromptError(
            f"{len(labels)} exemplar labels for {len(boxes)} exemplar boxes",
            field="exemplar_labels",
        )
    if len(boxes) == 0:
        return None
    if len(boxes) > max_boxes:
        raise InvalidPromptError(
            f"{len(boxes)} exemplar boxes; at most {max_boxes}",
            field="exemplar_boxes",
            max_boxes=max_boxes,
        )
    height, width = frame_hw
    for box in boxes:
        _check_box(box, width, height)
    labels = [1] * len(boxes) if labels is None else list(labels)
    if any(label not in (0, 1) for label in labels):
        raise InvalidPromptError("exemplar labels are 1 or 0", field="exemplar_labels")
    normalized = [
        [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
        for x0, y0, x1, y1 in boxes
    ]
    return (
        torch.tensor([normalized], device=device, dtype=dtype),
        torch.tensor([labels], dtype=torch.long, device=device),
    )


def _check_box(box: Sequence[float], width: int, height: int) -> None:
    if len(box) != 4 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in box):
        raise InvalidPromptError("an exemplar box is four numbers", field="exemplar_boxes")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InvalidPromptError(
            f"exemplar box {list(box)} is empty or leaves the {width}x{height} frame",
            field="exemplar_boxes",
        )

"""``ConceptDetector``: every instance of a text prompt (optionally with exemplar boxes) on one
frame, through transformers' ``Sam3Model``. One loaded model answers any number of frames and
prompts; it holds no per-video state (the SAM 2 sessions track what it finds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, Sam3Model
from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

from deployments.detector.postprocessing import Instance, instances
from deployments.detector.preprocessing import (
    InputSpec,
    exemplar_prompts,
    frame_size,
    pixel_values,
    tokenize,
)
from deployments.protocol.errors import InvalidPromptError
from deployments.protocol.settings import DetectorSettings


class ConceptDetector:
    """SAM 3's image detector behind one call. Build it with ``load_detector(settings)``.

    ``model`` must pool exemplar boxes without torchvision (``geometry.own_box_pooling``);
    ``load_detector`` sees to it.
    """

    def __init__(
        self,
        model: Sam3Model,
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        settings: DetectorSettings,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.settings = settings
        parameter = next(model.parameters())
        self.device = parameter.device
        self.dtype = parameter.dtype

    @property
    def context(self) -> int:
        """Tokens the text encoder reads, start and end included (32 for SAM 3)."""
        return self.model.config.text_config.max_position_embeddings

    def detect(
        self,
        frame_rgb: np.ndarray,
        text: str,
        exemplar_boxes: Sequence[Sequence[float]] = (),
        exemplar_labels: Sequence[int] | None = None,
        score_threshold: float | None = None,
    ) -> list[Instance]:
        """Every instance of ``text`` on ``frame_rgb`` (``[H, W, 3]`` uint8 RGB at the frame's
        own size), best score first: masks ``[H, W]``, boxes in frame pixels.

        ``exemplar_boxes`` (``[x0, y0, x1, y1]`` in frame pixels) with ``exemplar_labels`` (1
        positive, 0 negative; default all 1) refine the concept as SAM 3's visual exemplars.
        ``score_threshold`` (default: the settings') keeps instances scoring above it.

        Raises InvalidPromptError for empty or over-long text, bad exemplars or a threshold
        outside [0, 1]; ValueError for a frame that is not ``[H, W, 3]`` uint8.
        """
        threshold = self.settings.score_threshold if score_threshold is None else score_threshold
        if not 0.0 <= threshold <= 1.0:
            raise InvalidPromptError(
                f"score_threshold {threshold} is outside [0, 1]", field="score_threshold"
            )
        frame_hw = frame_size(frame_rgb)
        input_ids, attention_mask = tokenize(
            self.tokenizer, text, self.context, self.settings.max_text_chars, self.device
        )
        exemplars = exemplar_prompts(
            exemplar_boxes,
            exemplar_labels,
            frame_hw,
            self.settings.max_exemplar_boxes,
            self.device,
            self.dtype,
        )
        with torch.inference_mode():
            outputs: Sam3ImageSegmentationOutput = self.model(
                pixel_values=pixel_values(frame_rgb, self.spec, self.device, self.dtype),
                input_ids=input_ids,
                attention_mask=attention_mask,
                input_boxes=None if exemplars is None else exemplars[0],
                input_boxes_labels=None if exemplars is None else exemplars[1],
            )
            return instances(
                outputs.pred_logits[0],
                outputs.presence_logits[0],
                outputs.pred_boxes[0],
                outputs.pred_masks[0],
                frame_hw,
                threshold,
            )

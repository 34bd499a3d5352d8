"""``ServingVideoPredictor``: SAM 2's video predictor, storing memories in the compute dtype.

sam2 1.1.0 casts every stored memory feature to bf16 (``_run_single_frame_inference``,
``_run_memory_encoder``), which assumes bf16 autocast. In fp32 those bf16 features later meet
fp32 weights in the memory attention, and propagation crashes, e.g. when two objects are first
prompted on different frames. This subclass casts them back to ``compute_dtype`` after SAM 2
stored them, so fp32 works and bf16 behaves exactly as upstream.
"""

from __future__ import annotations

from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor


class ServingVideoPredictor(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` whose stored memory features are in ``compute_dtype``."""

    # Set by ``load_predictor`` from the settings; bf16 keeps upstream's behaviour.
    compute_dtype: torch.dtype = torch.bfloat16

    def _run_single_frame_inference(self, *args: Any, **kwargs: Any) -> tuple[dict, Any]:
        current_out, pred_masks = super()._run_single_frame_inference(*args, **kwargs)
        features = current_out["maskmem_features"]
        if features is not None:
            current_out["maskmem_features"] = features.to(self.compute_dtype)
        return current_out, pred_masks

    def _run_memory_encoder(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        features, pos_enc = super()._run_memory_encoder(*args, **kwargs)
        return features.to(self.compute_dtype), pos_enc

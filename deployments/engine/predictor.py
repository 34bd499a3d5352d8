"""``ServingVideoPredictor``: SAM 2's video predictor, storing memories in the compute dtype
and reading image features from the session's ``FeatureCache``.

sam2 1.1.0 casts every stored memory feature to bf16 (``_run_single_frame_inference``,
``_run_memory_encoder``), which assumes bf16 autocast. In fp32 those bf16 features later meet
fp32 weights in the memory attention, and propagation crashes, e.g. when two objects are first
prompted on different frames. This subclass casts them back to ``compute_dtype`` after SAM 2
stored them, so fp32 works and bf16 behaves exactly as upstream.

SAM 2 keeps one frame's image features per video; a state that carries a ``FeatureCache``
(``state.new_state``) gets them from there instead, so a click on a frame propagated a moment
ago skips the image encoder (see ``features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from deployments.engine.features import FeatureCache, FrameFeatures

# (feature sizes, dtype, device) of a vision_pos_enc list: it depends on nothing else.
_PosKey = tuple[tuple[torch.Size, ...], torch.dtype, torch.device]


class ServingVideoPredictor(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` whose stored memory features are in ``compute_dtype`` and whose
    image features come from the state's ``FeatureCache`` when it has one."""

    # Set by ``load_predictor`` from the settings; bf16 keeps upstream's behaviour.
    compute_dtype: torch.dtype = torch.bfloat16

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One copy of each positional encoding for every cached frame of every session.
        self._pos_encs: dict[_PosKey, tuple[torch.Tensor, ...]] = {}

    def _run_single_frame_inference(self, *args: Any, **kwargs: Any) -> tuple[dict, Any]:
        current_out, pred_masks = super()._run_single_frame_inference(*args, **kwargs)
        features = current_out["maskmem_features"]
        if features is not None:
            current_out["maskmem_features"] = features.to(self.compute_dtype)
        return current_out, pred_masks

    def _run_memory_encoder(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        features, pos_enc = super()._run_memory_encoder(*args, **kwargs)
        return features.to(self.compute_dtype), pos_enc

    def _get_image_feature(
        self, inference_state: dict[str, Any], frame_idx: int, batch_size: int
    ) -> tuple[Any, ...]:
        """SAM 2's features of a frame, expanded to ``batch_size`` objects, from the state's
        ``FeatureCache`` (computed and cached on a miss). Without a cache, SAM 2's own.

        The first element, the input image, is None: sam2 1.1.0's callers discard it, and
        holding it would cost 12 MiB per cached frame at 1024.
        """
        cache: FeatureCache | None = inference_state.get("feature_cache")
        if cache is None:
            return super()._get_image_feature(inference_state, frame_idx, batch_size)
        features = cache.get(frame_idx)
        if features is None:
            image = inference_state["images"][frame_idx].to(inference_state["device"]).float()
            [features] = self.encode_frames([image])
            cache.put(frame_idx, features)
        return (None, *self._prepare_backbone_features(features.expanded(batch_size)))

    def encode_frames(self, images: Sequence[torch.Tensor]) -> list[FrameFeatures]:
        """Run the image encoder once on ``images`` (``[3, S, S]`` each, on the model's
        device); one ``FrameFeatures`` per image, exact for a single image. A batch's slices
        are copied out of it, so each entry's memory is its own."""
        batch = images[0].unsqueeze(0) if len(images) == 1 else torch.stack(list(images))
        out = self.forward_image(batch)
        pos = self._shared_pos_enc(out["vision_pos_enc"])
        if len(images) == 1:
            return [FrameFeatures(tuple(out["backbone_fpn"]), pos, exact=True)]
        return [
            FrameFeatures(tuple(t[i : i + 1].clone() for t in out["backbone_fpn"]), pos, False)
            for i in range(len(images))
        ]

    def _shared_pos_enc(self, pos_enc: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The one stored copy of these positional encodings (batch 1). SAM 2's sine encoding
        is a function of the feature sizes (its module caches it by size), so every frame's
        equals the first one's."""
        key = (tuple(p.shape[1:] for p in pos_enc), pos_enc[0].dtype, pos_enc[0].device)
        shared = self._pos_encs.get(key)
        if shared is None:
            shared = self._pos_encs[key] = tuple(p[:1].clone() for p in pos_enc)
        return shared

"""SAM 3's exemplar-box encoder with its box pooling on our ``roi_align``. transformers'
``Sam3GeometryEncoder._encode_boxes`` calls ``torchvision.ops.roi_align``; this subclass does
the same sums on ``deployments.detector.roi_align``, and ``own_box_pooling`` puts it into a
loaded model with the same weights. A test checks it against transformers' own method."""

from __future__ import annotations

import torch
from transformers import Sam3Model
from transformers.models.sam3.modeling_sam3 import Sam3GeometryEncoder, box_cxcywh_to_xyxy

from deployments.detector.roi_align import roi_align


class OwnedPoolingGeometryEncoder(Sam3GeometryEncoder):
    """``Sam3GeometryEncoder`` whose box pooling needs no torchvision."""

    def _encode_boxes(
        self,
        boxes: torch.Tensor,
        boxes_mask: torch.Tensor,
        boxes_labels: torch.Tensor,
        vision_features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``boxes``: ``[B, K, 4]`` normalized ``cx, cy, w, h``; returns each box's embedding
        (direct projection + pooled features + position encoding + label) and the mask."""
        batch_size, num_boxes = boxes.shape[:2]
        height, width = vision_features.shape[-2:]
        embeddings = self.boxes_direct_project(boxes)

        scale = boxes.new_tensor([width, height, width, height]).view(1, 1, 4)
        corners = box_cxcywh_to_xyxy(boxes) * scale
        pooled = roi_align(vision_features, list(corners.unbind(0)), self.roi_size)
        pooled = self.boxes_pool_project(pooled).view(batch_size, num_boxes, self.hidden_size)
        embeddings = embeddings + pooled

        center_x, center_y, box_width, box_height = boxes.unbind(-1)
        position = self._encode_box_coordinates(
            center_x.flatten(), center_y.flatten(), box_width.flatten(), box_height.flatten()
        )
        position = position.view(batch_size, num_boxes, position.shape[-1])
        embeddings = embeddings + self.boxes_pos_enc_project(position)

        return self.label_embed(boxes_labels.long()) + embeddings, boxes_mask


def own_box_pooling(model: Sam3Model) -> None:
    """Replace ``model.geometry_encoder`` with an ``OwnedPoolingGeometryEncoder`` holding the
    same weights, on the same device and dtype (its state-dict keys do not change)."""
    current = model.geometry_encoder
    parameter = next(current.parameters())
    owned = OwnedPoolingGeometryEncoder(current.config)
    owned.load_state_dict(current.state_dict())
    model.geometry_encoder = owned.to(device=parameter.device, dtype=parameter.dtype).eval()

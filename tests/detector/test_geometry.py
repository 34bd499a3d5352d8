"""The exemplar-box encoder we put into SAM 3 computes what transformers' own
``Sam3GeometryEncoder`` computes with the same weights and the same RoIAlign. Here (only) their
module is handed our ``roi_align`` as ``torchvision.ops.roi_align``, so the comparison checks
every sum around the pooling; test_roi_align.py checks the pooling itself."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import transformers.models.sam3.modeling_sam3 as modeling_sam3

from deployments.detector.geometry import OwnedPoolingGeometryEncoder
from deployments.detector.roi_align import roi_align


def test_owned_pooling_encodes_boxes_as_transformers_does(detector, monkeypatch):
    ours = detector.model.geometry_encoder
    assert isinstance(ours, OwnedPoolingGeometryEncoder)
    theirs = modeling_sam3.Sam3GeometryEncoder(ours.config)
    theirs.load_state_dict(ours.state_dict())
    theirs.eval()
    monkeypatch.setattr(
        modeling_sam3,
        "torchvision",
        SimpleNamespace(ops=SimpleNamespace(roi_align=roi_align)),
        raising=False,
    )
    generator = torch.Generator().manual_seed(3)
    width = ours.hidden_size
    inputs = dict(
        box_embeddings=torch.tensor(
            [[[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.5, 0.4], [0.5, 0.5, 1, 1]]]
        ),
        box_mask=torch.tensor([[True, True, False]]),
        box_labels=torch.tensor([[1, 0, 1]]),
        img_feats=(torch.randn(1, width, 14, 14, generator=generator),),
        img_pos_embeds=(torch.randn(1, width, 14, 14, generator=generator),),
    )
    with torch.inference_mode():
        expected = theirs(**inputs)
        actual = ours(**inputs)
    assert torch.equal(actual.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(actual.attention_mask, expected.attention_mask)

"""``ConceptDetector.detect`` gives what ``Sam3Model`` itself gives on the same inputs, read the
way Meta's SAM 3 reads it (a reference written here, query by query), and rejects bad prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.detector import ConceptDetector, load_detector
from deployments.detector.preprocessing import pixel_values
from deployments.protocol.errors import InvalidPromptError
from tests.detector.conftest import detector_settings


def reference(
    detector: ConceptDetector,
    frame: np.ndarray,
    text: str,
    threshold: float,
    boxes: list[list[float]] | None = None,
    labels: list[int] | None = None,
) -> list[tuple[float, np.ndarray, list[float]]]:
    """``(score, mask, box)`` per instance, best first: the model called directly (text
    padded to 32 tokens as Sam3Processor pads it; boxes as normalized cx, cy, w, h), each query
    scored sigmoid(logit) x sigmoid(presence), its mask logits upsampled to the frame and
    thresholded at 0, its box scaled to pixels and clipped to the frame."""
    height, width = frame.shape[:2]
    text_inputs = detector.tokenizer(text, padding="max_length", max_length=32, return_tensors="pt")
    inputs = dict(
        pixel_values=pixel_values(frame, detector.spec, detector.device, detector.dtype),
        input_ids=text_inputs["input_ids"],
        attention_mask=text_inputs["attention_mask"],
    )
    if boxes:
        inputs["input_boxes"] = torch.tensor(
            [
                [
                    [
                        (x0 + x1) / 2 / width,
                        (y0 + y1) / 2 / height,
                        (x1 - x0) / width,
                        (y1 - y0) / height,
                    ]
                    for x0, y0, x1, y1 in boxes
                ]
            ]
        )
        inputs["input_boxes_labels"] = torch.tensor([labels])
    with torch.inference_mode():
        out = detector.model(**inputs)
    presence = torch.sigmoid(out.presence_logits[0, 0])
    found = []
    for query in range(out.pred_logits.shape[1]):
        score = float(torch.sigmoid(out.pred_logits[0, query]) * presence)
        if score <= threshold:
            continue
        logits = out.pred_masks[0, query][None, None]
        upsampled = F.interpolate(
            logits, size=(height, width), mode="bilinear", align_corners=False
        )
        mask = (upsampled[0, 0] > 0).numpy()
        if not mask.any():
            continue
        x0, y0, x1, y1 = out.pred_boxes[0, query].tolist()
        box = [
            min(max(x0 * width, 0), width),
            min(max(y0 * height, 0), height),
            min(max(x1 * width, 0), width),
            min(max(y1 * height, 0), height),
        ]
        found.append((score, mask, box))
    return sorted(found, key=lambda item: -item[0])


def assert_same(instances, expected) -> None:
    assert len(instances) == len(expected)
    for instance, (score, mask, box) in zip(instances, expected, strict=True):
        assert instance.score == pytest.approx(score, abs=1e-6)
        assert instance.mask.dtype == bool
        assert np.array_equal(instance.mask, mask)
        assert instance.box == pytest.approx(box, abs=1e-4)


def test_detect_gives_the_models_instances_at_the_frames_size(detector, frame):
    instances = detector.detect(frame, "grasper", score_threshold=0.0)
    assert len(instances) > 1
    assert all(instance.mask.shape == frame.shape[:2] for instance in instances)
    assert_same(instances, reference(detector, frame, "grasper", 0.0))


def test_exemplar_boxes_reach_the_model(detector, frame):
    boxes, labels = [[15, 20, 55, 60], [95, 30, 135, 70]], [1, 0]
    instances = detector.detect(frame, "grasper", boxes, labels, score_threshold=0.0)
    assert_same(instances, reference(detector, frame, "grasper", 0.0, boxes, labels))
    text_only = detector.detect(frame, "grasper", score_threshold=0.0)
    assert [i.score for i in instances] != [i.score for i in text_only]


def test_threshold_keeps_only_instances_scoring_above_it(detector, frame):
    scores = [i.score for i in detector.detect(frame, "gauze", score_threshold=0.0)]
    cut = sorted(scores)[len(scores) // 2]
    kept = detector.detect(frame, "gauze", score_threshold=cut)
    assert [i.score for i in kept] == [s for s in scores if s > cut]
    assert detector.detect(frame, "gauze", score_threshold=1.0) == []


def test_threshold_defaults_to_the_settings(detector, frame):
    scores = [i.score for i in detector.detect(frame, "gauze", score_threshold=0.0)]
    cut = sorted(scores)[len(scores) // 2]
    configured = ConceptDetector(
        detector.model, detector.tokenizer, detector.spec, detector_settings(score_threshold=cut)
    )
    assert [i.score for i in configured.detect(frame, "gauze")] == [s for s in scores if s > cut]


def test_detect_is_deterministic(detector, frame):
    first = detector.detect(frame, "surgical instrument", score_threshold=0.0)
    second = detector.detect(frame, "surgical instrument", score_threshold=0.0)
    assert [(i.score, i.box) for i in first] == [(i.score, i.box) for i in second]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_rejected(detector, frame, text):
    with pytest.raises(InvalidPromptError, match="empty"):
        detector.detect(frame, text)


def test_text_over_the_character_limit_is_rejected(detector, frame):
    with pytest.raises(InvalidPromptError, match="characters") as error:
        detector.detect(frame, "g" * (detector.settings.max_text_chars + 1))
    assert error.value.details["field"] == "text"


def test_text_over_the_models_context_is_rejected(detector, frame):
    text = "a " * 40  # 40 tokens and start and end: over 32, within the character limit
    with pytest.raises(InvalidPromptError, match="tokens") as error:
        detector.detect(frame, text)
    assert error.value.details["max_tokens"] == 32


@pytest.mark.parametrize(
    ("boxes", "labels", "match"),
    [
        ([[10, 10, 200, 50]], None, "leaves"),
        ([[30, 10, 20, 50]], None, "empty"),
        ([[10, 10, 20]], None, "four numbers"),
        ([[10, 10, 20, float("nan")]], None, "four numbers"),
        ([[10, 10, 20, 20]], [1, 0], "labels"),
        ([[10, 10, 20, 20]], [2], "1 or 0"),
        ([[10, 10, 20, 20]] * 17, None, "at most 16"),
    ],
)
def test_bad_exemplars_are_rejected(detector, frame, boxes, labels, match):
    with pytest.raises(InvalidPromptError, match=match):
        detector.detect(frame, "grasper", boxes, labels)


def test_threshold_outside_zero_one_is_rejected(detector, frame):
    with pytest.raises(InvalidPromptError, match="score_threshold"):
        detector.detect(frame, "grasper", score_threshold=1.5)


def test_a_frame_that_is_not_rgb_uint8_is_a_callers_error(detector, frame):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(frame.astype(np.float32), "grasper")


def test_bfloat16_as_on_cuda_detects_with_text_and_exemplars(frame):
    """compute_dtype 'auto' is bfloat16 on CUDA: the same path, here on the CPU."""
    bf16 = load_detector(detector_settings(compute_dtype="bfloat16"))
    assert bf16.dtype == torch.bfloat16
    instances = bf16.detect(frame, "grasper", [[15, 20, 55, 60]], score_threshold=0.0)
    assert instances
    assert all(i.mask.shape == frame.shape[:2] and 0 <= i.score <= 1 for i in instances)

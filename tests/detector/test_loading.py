"""The detector loads from a transformers checkpoint directory with ``from_pretrained`` (a
directory written by ``save_pretrained`` stands in for facebook/sam3's), and with random
weights only when asked: a seeded model and a real CLIP tokenizer trained on a word list."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from deployments.detector import load_detector
from deployments.detector.preprocessing import InputSpec, read_input_spec
from deployments.detector.random_model import build_config, build_model, build_tokenizer
from deployments.protocol.errors import ModelLoadError
from deployments.protocol.settings import DetectorSettings
from tests.detector.conftest import detector_settings


def test_random_tokenizer_is_a_trained_clip_bpe(detector):
    tokenizer = detector.tokenizer
    assert isinstance(tokenizer, CLIPTokenizer)
    ids = tokenizer("grasper")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 3  # a word of the training list is one token
    assert tokenizer.get_vocab() == build_tokenizer().get_vocab()


def test_random_tokenizer_reads_any_text_without_unknown_tokens(detector):
    tokenizer = detector.tokenizer
    ids = tokenizer("Ünïcode Zebra, in the gauze!")["input_ids"]
    assert tokenizer.eos_token_id not in ids[1:-1]  # the unknown token is CLIP's end token
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ünïcode zebra , in the gauze !"


def test_random_weights_follow_the_seed(detector):
    same = build_model(detector_settings(), detector.tokenizer).state_dict()
    other = build_model(detector_settings(seed=1), detector.tokenizer).state_dict()
    ours = detector.model.state_dict()
    assert all(torch.equal(same[name], ours[name]) for name in ours)
    assert not all(torch.equal(other[name], ours[name]) for name in ours)


def test_a_checkpoint_directory_loads_the_same_detector(detector, frame, tmp_path):
    detector.model.save_pretrained(tmp_path)
    detector.tokenizer.save_pretrained(tmp_path)
    loaded = load_detector(detector_settings(weights="checkpoint", checkpoint_dir=tmp_path))
    assert type(loaded.model.geometry_encoder) is type(detector.model.geometry_encoder)
    expected = detector.detect(frame, "gauze", [[15, 20, 55, 60]], score_threshold=0.0)
    actual = loaded.detect(frame, "gauze", [[15, 20, 55, 60]], score_threshold=0.0)
    assert [(i.score, i.box) for i in actual] == [(i.score, i.box) for i in expected]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(actual, expected, strict=True))


def test_a_missing_checkpoint_names_the_download_script(tmp_path):
    settings = detector_settings(weights="checkpoint", checkpoint_dir=tmp_path / "sam3")
    with pytest.raises(ModelLoadError, match=r"download_checkpoints\.sh sam3"):
        load_detector(settings)


def test_the_checkpoints_processor_config_gives_mean_and_std(tmp_path):
    assert read_input_spec(tmp_path, 1008) == InputSpec(1008, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    processor = {"image_processor": {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.4]}}
    (tmp_path / "processor_config.json").write_text(json.dumps(processor))
    assert read_input_spec(tmp_path, 1008) == InputSpec(1008, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))


def test_sam2_serve_weights_random_covers_the_detector(monkeypatch):
    monkeypatch.setenv("SAM2_SERVE_WEIGHTS", "random")
    assert DetectorSettings().weights == "random"
    monkeypatch.setenv("SAM2_SERVE_DETECTOR_WEIGHTS", "checkpoint")
    assert DetectorSettings().weights == "checkpoint"
    assert DetectorSettings(weights="random").weights == "random"


def test_the_full_random_architecture_is_sam3s(detector):
    """Built for GPU benchmarks without the hub: only its config is checked here."""
    settings = detector_settings(random_architecture="full", image_size=None)
    config = build_config(settings, detector.tokenizer)
    backbone, text = config.vision_config.backbone_config, config.text_config
    assert (backbone.hidden_size, backbone.num_hidden_layers, config.image_size) == (1024, 32, 1008)
    assert (text.hidden_size, text.num_hidden_layers, text.max_position_embeddings) == (
        1024,
        24,
        32,
    )
    assert config.detr_decoder_config.num_queries == 200
    assert text.eos_token_id == detector.tokenizer.eos_token_id < text.vocab_size

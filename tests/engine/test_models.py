"""Model registry and loading: names, missing checkpoints, custom configs from files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sam2

from deployments.engine.models import load_predictor
from deployments.protocol import REGISTRY, EngineSettings, ModelLoadError
from deployments.protocol.registry import official_downloads, resolve_spec


def test_registry_holds_sam2_and_sam21_in_four_sizes():
    sizes = ("tiny", "small", "base_plus", "large")
    assert {f"sam2.1_hiera_{s}" for s in sizes} | {f"sam2_hiera_{s}" for s in sizes} == set(
        REGISTRY
    )
    tiny = REGISTRY["sam2.1_hiera_tiny"]
    assert tiny.config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert tiny.url.endswith("/092824/sam2.1_hiera_tiny.pt")
    assert REGISTRY["sam2_hiera_base_plus"].config == "configs/sam2/sam2_hiera_b+.yaml"


def test_official_downloads_come_from_the_registry():
    assert official_downloads(["sam2_hiera_tiny"]) == [
        (
            "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt",
            "sam2_hiera_tiny.pt",
        )
    ]
    with pytest.raises(ModelLoadError, match="no official checkpoint"):
        official_downloads(["custom"])


def test_missing_checkpoint_names_the_download_script(tmp_path):
    settings = EngineSettings(checkpoint_dir=tmp_path, device="cpu")
    with pytest.raises(
        ModelLoadError, match=r"scripts/download_checkpoints\.sh sam2\.1_hiera_tiny"
    ):
        load_predictor(settings)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match=r"sam2\.1_hiera_large"):
        resolve_spec(EngineSettings(model="sam3"))


def test_custom_model_needs_a_config():
    with pytest.raises(ModelLoadError, match="custom_config"):
        resolve_spec(EngineSettings(model="custom"))


def test_custom_config_file_outside_sam2_builds_and_sam2_configs_still_resolve(tmp_path):
    config = tmp_path / "my_model.yaml"
    shutil.copy(Path(sam2.__file__).parent / "configs/sam2.1/sam2.1_hiera_t.yaml", config)
    settings = EngineSettings(
        model="custom", custom_config=str(config), weights="random", image_size=256, device="cpu"
    )
    predictor = load_predictor(settings)
    assert predictor.image_size == 256 and predictor.add_all_frames_to_correct_as_cond
    again = load_predictor(EngineSettings(weights="random", image_size=256, device="cpu"))
    assert again.image_size == 256


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAM2_SERVE_MAX_SESSIONS", "2")
    monkeypatch.setenv("SAM2_SERVE_WEIGHTS", "random")
    settings = EngineSettings()
    assert (settings.max_sessions, settings.weights) == (2, "random")

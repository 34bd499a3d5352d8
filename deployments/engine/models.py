"""The model registry (name -> sam2 config + checkpoint) and the one place that builds a
``SAM2VideoPredictor`` from settings.

``scripts/download_checkpoints.sh`` reads the official URLs from here, so they live here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deployments.engine.config import EngineSettings
from deployments.engine.errors import ModelLoadError

_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM20_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
CUSTOM = "custom"

# Like Meta's demo (sam2#731): a correction click on a tracked frame becomes a conditioning
# frame, so it sticks when the video is propagated again.
_SERVING_OVERRIDES = ("++model.add_all_frames_to_correct_as_cond=true",)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    name: str
    config: str
    checkpoint: str
    url: str | None


def _official(prefix: str, config_dir: str, base_url: str) -> dict[str, ModelSpec]:
    sizes = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
    specs = {}
    for size, short in sizes.items():
        name = f"{prefix}_hiera_{size}"
        specs[name] = ModelSpec(
            name=name,
            config=f"{config_dir}/{prefix}_hiera_{short}.yaml",
            checkpoint=f"{name}.pt",
            url=f"{base_url}{name}.pt",
        )
    return specs


REGISTRY: dict[str, ModelSpec] = {
    **_official("sam2.1", "configs/sam2.1", _SAM21_URL),
    **_official("sam2", "configs/sam2", _SAM20_URL),
}


def resolve_spec(settings: EngineSettings) -> ModelSpec:
    """The registry entry the settings ask for; ``custom`` takes config and checkpoint as given."""
    if settings.model == CUSTOM:
        if not settings.custom_config:
            raise ModelLoadError("model 'custom' needs custom_config (a sam2 config or YAML path)")
        checkpoint = settings.checkpoint.name if settings.checkpoint else "custom.pt"
        return ModelSpec(CUSTOM, settings.custom_config, checkpoint, None)
    if settings.model not in REGISTRY:
        known = ", ".join([*REGISTRY, CUSTOM])
        raise ModelLoadError(f"unknown model {settings.model!r}; known: {known}")
    return REGISTRY[settings.model]


def checkpoint_path(settings: EngineSettings, spec: ModelSpec) -> Path:
    return settings.checkpoint or settings.checkpoint_dir / spec.checkpoint


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_predictor(settings: EngineSettings) -> torch.nn.Module:
    """Build the video predictor the settings name, on their device, in eval mode.

    Raises ModelLoadError for an unknown model or a missing checkpoint (unless the settings
    explicitly ask for random weights).
    """
    spec = resolve_spec(settings)
    ckpt: Path | None = None
    if settings.weights == "checkpoint":
        ckpt = checkpoint_path(settings, spec)
        if not ckpt.is_file():
            raise ModelLoadError(
                f"checkpoint {ckpt} for model {spec.name!r} not found; fetch it with "
                f"scripts/download_checkpoints.sh {spec.name} (or set weights: random for "
                "tests and offline development)",
                checkpoint=str(ckpt),
            )
    else:
        torch.manual_seed(settings.seed)
    overrides = list(_SERVING_OVERRIDES)
    if settings.image_size is not None:
        overrides.append(f"++model.image_size={settings.image_size}")
    device = resolve_device(settings.device)
    try:
        return _build(spec.config, ckpt, device, overrides)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"building {spec.name!r} failed: {exc}") from exc


def _build(config: str, ckpt: Path | None, device: torch.device, overrides: list[str]):
    from sam2.build_sam import build_sam2_video_predictor

    path = Path(config)
    if path.suffix != ".yaml" or not path.is_file():
        return build_sam2_video_predictor(
            config, str(ckpt) if ckpt else None, device=device, hydra_overrides_extra=overrides
        )
    return _build_from_file(path, ckpt, device, overrides)


def _build_from_file(path: Path, ckpt: Path | None, device: torch.device, overrides: list[str]):
    """Build from a config file outside the sam2 package (e.g. MedSAM2's): point Hydra at its
    folder for the build, then give sam2 its own config module back."""
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2_video_predictor

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base="1.2"):
            return build_sam2_video_predictor(
                path.name,
                str(ckpt) if ckpt else None,
                device=device,
                hydra_overrides_extra=overrides,
            )
    finally:
        GlobalHydra.instance().clear()
        initialize_config_module("sam2", version_base="1.2")


def official_downloads(names: list[str]) -> list[tuple[str, str]]:
    """(url, file name) of each named official checkpoint; ModelLoadError for other names."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ModelLoadError(f"no official checkpoint for {unknown}; known: {', '.join(REGISTRY)}")
    return [(REGISTRY[name].url, REGISTRY[name].checkpoint) for name in names]

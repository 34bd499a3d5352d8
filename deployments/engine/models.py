"""The one place that builds SAM 2's video predictor from settings: registry entry (see
``deployments.protocol.registry``), checkpoint, device and compute dtype."""

from __future__ import annotations

from pathlib import Path

import torch

from deployments.engine.compilation import build_overrides
from deployments.engine.precision import resolve_compute_dtype
from deployments.engine.predictor import ServingVideoPredictor
from deployments.protocol.errors import ModelLoadError
from deployments.protocol.registry import ModelSpec, resolve_spec
from deployments.protocol.settings import EngineSettings

# Like Meta's demo (sam2#731): a correction click on a tracked frame becomes a conditioning
# frame, so it sticks when the video is propagated again.
_SERVING_OVERRIDES = ("++model.add_all_frames_to_correct_as_cond=true",)


def checkpoint_path(settings: EngineSettings, spec: ModelSpec) -> Path:
    return settings.checkpoint or settings.checkpoint_dir / spec.checkpoint


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_predictor(settings: EngineSettings) -> ServingVideoPredictor:
    """Build the video predictor the settings name, on their device, in eval mode, computing
    in the settings' dtype (run it under ``precision.model_context``), compiled as the
    ``compile`` setting says (``compilation``: it compiles on first use; warm it up).

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
    overrides = [*_SERVING_OVERRIDES, *build_overrides(settings.compile)]
    if settings.image_size is not None:
        overrides.append(f"++model.image_size={settings.image_size}")
    device = resolve_device(settings.device)
    try:
        predictor = _build(spec.config, ckpt, device, overrides)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"building {spec.name!r} failed: {exc}") from exc
    predictor.compute_dtype = resolve_compute_dtype(settings.compute_dtype, device)
    return predictor


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

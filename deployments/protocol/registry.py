"""The model registry: name -> sam2 config, checkpoint file and official download URL.

Pure data, so the ingress lists the models without loading torch;
``scripts/download_checkpoints.sh`` reads the URLs from here, so they live here only.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.protocol.errors import ModelLoadError
from deployments.protocol.settings import EngineSettings

_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM20_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
CUSTOM = "custom"


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


def official_downloads(names: list[str]) -> list[tuple[str, str]]:
    """(url, file name) of each named official checkpoint; ModelLoadError for other names."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ModelLoadError(f"no official checkpoint for {unknown}; known: {', '.join(REGISTRY)}")
    return [(REGISTRY[name].url, REGISTRY[name].checkpoint) for name in names]

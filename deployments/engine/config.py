"""Engine settings: one pydantic model, read from the environment (``SAM2_SERVE_*``) or
given explicitly (tests, the Serve config)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """Everything the SAM 2 session engine needs to load a model and hold sessions."""

    model_config = SettingsConfigDict(env_prefix="SAM2_SERVE_", extra="forbid")

    model: str = Field("sam2.1_hiera_tiny", description="Name from the model registry.")
    custom_config: str | None = Field(
        None,
        description="For model 'custom': a sam2 config name (configs/sam2.1/...) or a YAML path.",
    )
    checkpoint: Path | None = Field(
        None, description="Checkpoint file; default: checkpoint_dir / the registry's file name."
    )
    checkpoint_dir: Path = Field(Path("checkpoints"), description="Where checkpoints are kept.")
    weights: Literal["checkpoint", "random"] = Field(
        "checkpoint",
        description="'random' builds the model without a checkpoint: tests and offline dev only.",
    )
    seed: int = Field(0, description="Torch seed for random weights, so runs are repeatable.")
    device: str = Field(
        "auto", description="'auto' (cuda when available, else cpu), 'cpu', 'cuda:N'."
    )
    image_size: int | None = Field(
        None, ge=64, description="Override the model's input size (multiple of 16); tests use 256."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads; None: keep.")
    max_sessions: int = Field(3, ge=1, description="Sessions sharing one loaded model.")
    max_objects: int = Field(16, ge=1, le=255, description="Objects per session.")
    storage_root: Path = Field(
        Path(tempfile.gettempdir()) / "sam2-serve" / "sessions",
        description="Session directories (frames, masks); a shared volume on a cluster.",
    )
    frame_cache_size: int = Field(8, ge=1, description="Decoded frames kept per session (LRU).")
    jpeg_quality: int = Field(90, ge=50, le=100, description="Quality of the stored frames.")
    max_video_frames: int = Field(
        108_000, ge=1, description="Most frames a session may hold (an hour at 30 fps)."
    )
    max_video_seconds: float = Field(
        4 * 3600, gt=0, description="Longest video (after start/end) a session may hold."
    )
    offload_state_to_cpu: bool = Field(
        False, description="Keep SAM 2 memories in host memory (saves GPU memory, a bit slower)."
    )

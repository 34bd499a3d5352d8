"""The one place that builds the concept detector from settings: a transformers checkpoint
directory (``from_pretrained``, never the hub), or seeded random weights when the settings ask
for them; then device, dtype and our own box pooling."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Sam3Model

from deployments.detector.detector import ConceptDetector
from deployments.detector.geometry import own_box_pooling
from deployments.detector.preprocessing import InputSpec, read_input_spec
from deployments.detector.random_model import build_model, build_tokenizer
from deployments.protocol.errors import ModelLoadError
from deployments.protocol.settings import DetectorSettings


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (as SAM 3 runs there), float32 elsewhere (CPUs without
    native bf16 emulate it several times slower)."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, setting)


def load_detector(settings: DetectorSettings) -> ConceptDetector:
    """The detector the settings describe, in eval mode on their device and dtype.

    Raises ModelLoadError for a missing or unreadable checkpoint directory (unless the
    settings explicitly ask for random weights).
    """
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.compute_dtype, device)
    if settings.weights == "random":
        tokenizer = build_tokenizer()
        model = build_model(settings, tokenizer)
        spec = InputSpec(model.config.image_size)
    else:
        model, tokenizer = _from_checkpoint(settings.checkpoint_dir, dtype)
        spec = read_input_spec(settings.checkpoint_dir, model.config.image_size)
    model = model.to(device=device, dtype=dtype).eval()
    own_box_pooling(model)
    return ConceptDetector(model, tokenizer, spec, settings)


def _from_checkpoint(path: Path, dtype: torch.dtype) -> tuple[Sam3Model, PreTrainedTokenizerBase]:
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"SAM 3 checkpoint directory {path} not found (no config.json); fetch it with "
            "scripts/download_checkpoints.sh sam3 (or set weights: random for tests and "
            "offline development)",
            checkpoint=str(path),
        )
    try:
        model = Sam3Model.from_pretrained(path, local_files_only=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"loading SAM 3 from {path} failed: {exc}", checkpoint=str(path)
        ) from exc
    return model, tokenizer

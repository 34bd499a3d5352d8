"""Compiled SAM 2 (setting ``compile``): torch.compile through sam2 1.1.0's own switches.

sam2 1.1.0 has two, and this module only chooses between them:

- ``encoder``: the config key ``compile_image_encoder``, with which ``SAM2Base`` compiles the
  image encoder's forward (mode ``max-autotune``, full graph, static shapes);
- ``full``: that plus ``SAM2VideoPredictorVOS``, what ``build_sam2_video_predictor(...,
  vos_optimized=True)`` builds (sam2's README: tiny 47 -> 91 frames/s on an A100). It also
  compiles the memory encoder, the memory attention (dynamic shapes: the number of memories
  varies), the prompt encoder and the mask decoder.

Both keep our ``ServingVideoPredictor`` behaviour by subclassing it. Two consequences of
sam2's choices shape the rest:

- ``max-autotune`` captures CUDA graphs on CUDA, and a graph's outputs are overwritten by its
  next replay. Image features outlive one step here (the session's feature cache), so both
  predictors use sam2's VOS ``forward_image``, which returns copies.
- Static shapes: the first call at each new shape compiles (seconds on a CPU at size 128,
  minutes at 1024 with autotuning). ``warm_up`` runs the shapes a replica meets (encoder
  batches, a short propagation) before the first user's request; a new number of objects in
  one session still compiles the SAM heads on first use (``full``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictorVOS

from deployments.engine.predictor import ServingVideoPredictor
from deployments.protocol.settings import CompileMode

# Frames of the ``full`` warm-up propagation: past SAM 2.1's 7 memories and 16 object
# pointers, so the memory attention has met the input lengths of a long propagation (its CUDA
# graphs are recorded per length).
WARMUP_FRAMES = 18
_WARMUP_FRAME_SIDE = 64


class EncoderCompiledPredictor(ServingVideoPredictor):
    """``ServingVideoPredictor`` built with ``compile_image_encoder``; features come out as
    copies (sam2's VOS ``forward_image``), so a CUDA graph's next replay leaves them intact."""

    forward_image = SAM2VideoPredictorVOS.forward_image


class FullyCompiledPredictor(ServingVideoPredictor, SAM2VideoPredictorVOS):
    """``ServingVideoPredictor`` over sam2's ``SAM2VideoPredictorVOS``: every per-frame
    component compiled by sam2 itself (its ``__init__`` calls ``_compile_all_components``)."""


PREDICTORS: dict[CompileMode, type[ServingVideoPredictor]] = {
    "none": ServingVideoPredictor,
    "encoder": EncoderCompiledPredictor,
    "full": FullyCompiledPredictor,
}


def build_overrides(mode: CompileMode) -> list[str]:
    """The Hydra overrides that make sam2 build the predictor for ``mode``."""
    predictor = PREDICTORS[mode]
    overrides = [f"++model._target_={predictor.__module__}.{predictor.__qualname__}"]
    if mode != "none":
        overrides.append("++model.compile_image_encoder=true")
    return overrides


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether sam2 replaced ``module``'s forward with a compiled one (it compiles the bound
    forward, not the module, so checkpoints still load into the module's own names)."""
    return "forward" in vars(module)


def warm_up(
    predictor: ServingVideoPredictor, mode: CompileMode, batch_sizes: Iterable[int]
) -> None:
    """Compile what ``mode`` compiles at the shapes serving meets, on the calling thread (the
    model thread, under its autocast: compiled graphs are specialised to the dtype they saw).

    Encoder batches of ``batch_sizes`` frames (sessions propagating together), and for
    ``full`` a ``WARMUP_FRAMES``-frame propagation of one object over blank frames, through
    sam2's own video API. A blank click beforehand (``SessionEngine``) covers batch 1 and the
    SAM heads of one object.
    """
    if mode == "none":
        return
    size = predictor.image_size
    for batch in batch_sizes:
        predictor.forward_image(torch.zeros(batch, 3, size, size, device=predictor.device))
    if mode == "full":
        _propagate_blank(predictor)


def _propagate_blank(predictor: ServingVideoPredictor) -> None:
    """One click on frame 0 of a blank JPEG clip, propagated to its end (sam2's loader reads
    JPEG folders; the clip is gone afterwards)."""
    side = _WARMUP_FRAME_SIDE
    with tempfile.TemporaryDirectory(prefix="sam2-warmup-") as folder:
        blank = np.zeros((side, side, 3), np.uint8)
        for index in range(WARMUP_FRAMES):
            cv2.imwrite(str(Path(folder) / f"{index:05d}.jpg"), blank)
        state = predictor.init_state(video_path=folder)
        predictor.add_new_points_or_box(state, 0, 1, points=[[side / 2, side / 2]], labels=[1])
        for _ in predictor.propagate_in_video(state):
            pass
        predictor.reset_state(state)

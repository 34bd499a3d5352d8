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
- Static shapes, and guards on strides and tensor kinds: the first call at each new shape
  compiles (a minute or more on a CPU at size 128). ``SessionEngine`` warms up before the first
  user's request with the shapes a replica meets: encoder batches (``warm_up_encoder``) and a
  real session over a ``BlankClip``, clicked and propagated (the shapes of SAM 2's own
  ``init_state`` path differ in strides and recompile). A new number of objects in one session
  still compiles the SAM heads on first use (``full``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictorVOS

from deployments.engine.predictor import ServingVideoPredictor
from deployments.protocol.settings import CompileMode
from deployments.protocol.types import SourceVideo, VideoInfo

# Frames of the ``full`` warm-up propagation: past SAM 2.1's 7 memories and 16 object
# pointers, so the memory attention has met the input lengths of a long propagation (its CUDA
# graphs are recorded per length).
WARMUP_FRAMES = 18
# Points on one frame the warm-up clicks up to: under ``full`` sam2 compiles the prompt encoder
# and mask decoder per number of points (measured on a CPU at 128: 16 s and 11 s for a user's
# second and third point without it).
WARMUP_POINTS = 3
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


def warm_up_encoder(predictor: ServingVideoPredictor, batch_sizes: Iterable[int]) -> None:
    """Compile the image encoder for batches of ``batch_sizes`` frames (sessions propagating
    together), as the executor's batcher stacks them: on the model thread, under its autocast
    and inference mode (compiled graphs are specialised to the dtype and tensor kind they saw).
    """
    size = predictor.image_size
    for batch in batch_sizes:
        predictor.forward_image(torch.zeros(batch, 3, size, size, device=predictor.device))


class BlankClip:
    """``num_frames`` black frames as a ``FrameReader``: the warm-up session's video, so that
    it runs a real session's code (frame source, feature cache, SAM 2 state) and the compiled
    graphs meet the tensors sessions pass them, strides and all."""

    def __init__(self, num_frames: int = WARMUP_FRAMES, side: int = _WARMUP_FRAME_SIDE) -> None:
        self.num_frames = num_frames
        self._frame = np.zeros((side, side, 3), np.uint8)
        self._frame.flags.writeable = False

    @property
    def info(self) -> VideoInfo:
        side = self._frame.shape[0]
        seconds = float(self.num_frames)
        source = SourceVideo(
            width=side, height=side, fps=1.0, num_frames=self.num_frames, duration_s=seconds
        )
        return VideoInfo(
            num_frames=self.num_frames,
            fps=1.0,
            width=side,
            height=side,
            start_time=0.0,
            end_time=seconds,
            frame_stride=1,
            source=source,
        )

    def frame(self, k: int) -> np.ndarray:
        if not 0 <= k < self.num_frames:
            raise IndexError(f"frame {k} is outside the {self.num_frames}-frame blank clip")
        return self._frame

    def prefetch(self, k: int) -> None:
        """Nothing to read ahead."""

    def buffer_nbytes(self) -> int:
        return self._frame.nbytes

    def close(self) -> None:
        """Nothing to release."""

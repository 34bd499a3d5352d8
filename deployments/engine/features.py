"""Image features kept past the frame SAM 2 is on: a session's ``FeatureCache`` and the
``EncoderBatcher`` that fills several sessions' caches with one batched encoder run.

SAM 2 keeps the backbone features of one frame per video (``cached_features``), so a click on
a frame a propagation passed a moment ago runs the image encoder again, the bulk of a click.
Each session keeps the features of the frames it computed last, least recently used evicted
past a byte budget, on the model's device: ``ServingVideoPredictor._get_image_feature`` reads
and fills it. Features depend on the frame alone, never on prompts, so a hit hands SAM 2
exactly what it would have computed.

Except features computed in a batch: batched kernels may differ from batch-1 kernels in the
last bits, so those entries are marked inexact and serve propagation steps only (where the
masks may differ in those bits from an unbatched run); prompts, and the consolidation of
prompts into memory, read exact features only, so SAM 2's state stays a function of the
prompt log and a rebuild that replays it computes bit-identical masks.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameFeatures:
    """One frame's image-encoder output at batch size 1, as ``forward_image`` returns it.

    ``vision_pos_enc`` depends on the feature sizes only: every frame of a predictor shares
    one copy, which is why ``nbytes`` leaves it out. ``exact``: computed alone (batch 1), as
    SAM 2 computes it; False when sliced from a batch.
    """

    backbone_fpn: tuple[torch.Tensor, ...]
    vision_pos_enc: tuple[torch.Tensor, ...]
    exact: bool

    @property
    def nbytes(self) -> int:
        return sum(t.untyped_storage().nbytes() for t in self.backbone_fpn)

    def expanded(self, batch_size: int) -> dict[str, list[torch.Tensor]]:
        """The features as ``forward_image``'s output for ``batch_size`` objects (views, as
        SAM 2's ``_get_image_feature`` expands its cached frame)."""
        return {
            "backbone_fpn": [t.expand(batch_size, -1, -1, -1) for t in self.backbone_fpn],
            "vision_pos_enc": [t.expand(batch_size, -1, -1, -1) for t in self.vision_pos_enc],
        }


class FeatureCache:
    """A session's ``FrameFeatures`` by frame index, least recently used evicted once they
    pass ``max_bytes``; the most recent entry is always kept (as SAM 2's one-frame cache), so
    a budget of 0 behaves as SAM 2 alone. Used on the model thread only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._nbytes = 0
        self._in_propagation_step = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, frame_index: object) -> bool:
        """Whether some entry (exact or not) is held; no effect on recency."""
        return frame_index in self._entries

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def frames(self) -> list[int]:
        """Frame indices held, least recently used first."""
        return list(self._entries)

    def get(self, frame_index: int) -> FrameFeatures | None:
        """The frame's features, now most recently used; None if not held, or held inexact
        outside a propagation step (see ``propagation_step``)."""
        entry = self._entries.get(frame_index)
        if entry is None or not (entry.exact or self._in_propagation_step):
            self.misses += 1
            return None
        self._entries.move_to_end(frame_index)
        self.hits += 1
        return entry

    def put(self, frame_index: int, features: FrameFeatures) -> None:
        """Hold ``features`` as the most recently used entry, replacing the frame's old one,
        and evict least recently used entries past the budget."""
        old = self._entries.pop(frame_index, None)
        if old is not None:
            self._nbytes -= old.nbytes
        self._entries[frame_index] = features
        self._nbytes += features.nbytes
        while self._nbytes > self.max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._nbytes -= evicted.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0

    @contextlib.contextmanager
    def propagation_step(self) -> Iterator[None]:
        """Within: inexact (batched) entries count as hits too. Only a propagation step's
        non-conditioning outputs may differ in the last bits from an unbatched run; prompts and
        their consolidation into memory encode the frame again (docs/architecture.md, Fidelity)."""
        self._in_propagation_step = True
        try:
            yield
        finally:
            self._in_propagation_step = False


@dataclass(frozen=True)
class FrameToEncode:
    """A frame a queued propagation step will run the image encoder on: whose cache it
    belongs in, and how to read it as the model's ``[3, S, S]`` input."""

    cache: FeatureCache
    frame_index: int
    read: Callable[[], torch.Tensor]


# What a queued item reports it will encode when it runs (evaluated on the model thread, just
# before the batch is formed); None: nothing, or no longer.
UpcomingFrame = Callable[[], FrameToEncode | None]


class FrameEncoder(Protocol):
    """What the batcher needs of the model: ``ServingVideoPredictor`` is one. A Protocol, so
    that this module stays below ``predictor``, which imports it (one way, no cycle)."""

    @property
    def device(self) -> torch.device: ...

    def encode_frames(self, images: Sequence[torch.Tensor]) -> list[FrameFeatures]: ...


class EncoderBatcher:
    """Runs the image encoder once for the frames several sessions' propagation steps will
    need next, so that each step then finds its frame in its session's cache.

    ``ModelExecutor`` calls ``run`` before a propagation step with that step's upcoming frame
    and those of the steps queued next by other sessions (the round-robin order). A batch
    needs two frames at least: a frame alone is left to its step, which encodes it exactly.
    """

    def __init__(self, predictor: FrameEncoder, max_batch: int) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.batches = 0
        self.batched_frames = 0

    def run(self, upcoming: Sequence[UpcomingFrame]) -> None:
        """Encode the frames ``upcoming`` names that their caches lack, up to ``max_batch``,
        in one batch. A failed batch (e.g. out of memory for its activations) is logged and
        left to the steps, which encode their frames one by one."""
        try:
            frames = self._missing(upcoming)
            if len(frames) < 2:
                return
            images = [frame.read().to(self.predictor.device).float() for frame in frames]
            features = self.predictor.encode_frames(images)
        except Exception:
            logger.exception("batched image encoding failed; the steps encode their own frames")
            return
        for frame, encoded in zip(frames, features, strict=True):
            frame.cache.put(frame.frame_index, encoded)
        self.batches += 1
        self.batched_frames += len(frames)

    def _missing(self, upcoming: Sequence[UpcomingFrame]) -> list[FrameToEncode]:
        frames: list[FrameToEncode] = []
        seen: set[tuple[int, int]] = set()
        for report in upcoming:
            frame = report()
            if frame is None or frame.frame_index in frame.cache:
                continue
            key = (id(frame.cache), frame.frame_index)
            if key not in seen:
                seen.add(key)
                frames.append(frame)
            if len(frames) == self.max_batch:
                break
        return frames

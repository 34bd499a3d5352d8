"""The retention window: which of SAM 2's non-conditioning outputs a session keeps.

Stock SAM 2 keeps the output of every frame it ever tracked (sam2#196: 40-80 GB for an hour).
A session keeps
- every conditioning output (each prompted frame), as stock does;
- the non-conditioning outputs within ``window`` frames of each object's prompted frames and of
  the anchors of the latest propagation (its start and where each pass is or ended): what SAM
  2 reads when it corrects a frame near a prompt or continues from there;
- beyond those, the most recently computed outputs while the session's outputs fit
  ``budget_bytes``; the oldest unprotected ones are dropped first.

A dropped output is one stock SAM 2 still holds (``NonCondOutputs.dropped``): an operation
that would read it is computed without it and reported inexact (see ``session``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from deployments.engine.ledger import NonCondOutputs


@dataclass(frozen=True)
class RetentionWindow:
    """``window``: frames kept on each side of a protected frame (SAM 2's look-back,
    ``state.memory_window``); ``budget_bytes``: the session's outputs beyond those."""

    window: int
    budget_bytes: int

    def enforce(self, state: dict[str, Any], anchors: Sequence[int]) -> None:
        """Drop the oldest unprotected outputs until the session's fit the budget."""
        outputs = _non_cond_outputs(state)
        excess = sum(nc.nbytes for nc in outputs.values()) - self.budget_bytes
        if excess <= 0:
            return
        centers = {idx: [*_prompted_frames(state, idx), *anchors] for idx in outputs}
        doomed: list[tuple[int, int]] = []
        for _, idx, frame in heapq.merge(
            *(self._unprotected(idx, nc, centers[idx]) for idx, nc in outputs.items())
        ):
            if excess <= 0:
                break
            excess -= outputs[idx].size_of(frame)
            doomed.append((idx, frame))
        for idx, frame in doomed:
            outputs[idx].drop(frame)

    def protects(self, frame: int, centers: Iterable[int]) -> bool:
        return any(abs(frame - center) <= self.window for center in centers)

    def _unprotected(
        self, idx: int, outputs: NonCondOutputs, centers: list[int]
    ) -> Iterator[tuple[int, int, int]]:
        """(store order, object index, frame), oldest first."""
        for frame, tick in list(outputs.stored_at.items()):
            if not self.protects(frame, centers):
                yield tick, idx, frame


def held_nbytes(state: dict[str, Any]) -> int:
    """Bytes of the non-conditioning outputs a session holds."""
    return sum(nc.nbytes for nc in _non_cond_outputs(state).values())


def _non_cond_outputs(state: dict[str, Any]) -> dict[int, NonCondOutputs]:
    return {idx: out["non_cond_frame_outputs"] for idx, out in state["output_dict_per_obj"].items()}


def _prompted_frames(state: dict[str, Any], idx: int) -> set[int]:
    return {*state["point_inputs_per_obj"][idx], *state["mask_inputs_per_obj"][idx]}

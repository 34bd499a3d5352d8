"""Two of SAM 2's per-object containers, replaced by ones that behave as SAM 2 expects and also
keep what the serving engine needs to know, at one byte per frame.

- ``TrackedFrames`` is ``frames_tracked_per_obj[obj_idx]``: SAM 2 stores a ``{"reverse": bool}``
  dict per tracked frame (about 100 MB at 108,000 frames x 10 objects).
- ``NonCondOutputs`` is ``output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]``: SAM 2's dict
  of the outputs a propagation computed, which also knows which frames the retention window
  dropped (stock SAM 2 still holds those), which frames SAM 2 looked up during the operation
  under way, and how recently each output was stored.

An output computed from memory that differs from stock SAM 2's (the window had dropped some)
is marked ``EXACT_KEY: False``; SAM 2 ignores keys it does not read, and the mark moves with
the output wherever SAM 2 moves it (consolidation, a clear's downgrade).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, MutableMapping
from typing import Any

import torch

# Set to False on an output computed from memory that differs from stock SAM 2's.
EXACT_KEY = "serving_exact"
# SAM 2's output tensors per frame and object ("maskmem_pos_enc" is one shared constant).
OUTPUT_TENSORS = ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")
_TICKS = itertools.count()  # a store order across every session and object


def is_exact(output: dict[str, Any] | None) -> bool:
    """Whether an output (None: absent) equals stock SAM 2's."""
    return output is None or output.get(EXACT_KEY, True)


def mark_inexact(output: dict[str, Any]) -> None:
    output[EXACT_KEY] = False


def output_nbytes(output: dict[str, Any]) -> int:
    return sum(t.nbytes for k in OUTPUT_TENSORS if isinstance(t := output.get(k), torch.Tensor))


class TrackedFrames(MutableMapping[int, dict[str, bool]]):
    """Which frames a propagation reached and in which direction, one byte per frame."""

    _UNTRACKED, _FORWARD, _BACKWARD = 0, 1, 2

    def __init__(self, num_frames: int) -> None:
        self.codes = bytearray(num_frames)

    def __getitem__(self, frame: int) -> dict[str, bool]:
        code = self._code(frame)
        if code == self._UNTRACKED:
            raise KeyError(frame)
        return {"reverse": code == self._BACKWARD}

    def __setitem__(self, frame: int, value: dict[str, bool]) -> None:
        self.codes[frame] = self._BACKWARD if value["reverse"] else self._FORWARD

    def __delitem__(self, frame: int) -> None:
        if self._code(frame) == self._UNTRACKED:
            raise KeyError(frame)
        self.codes[frame] = self._UNTRACKED

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self._code(frame) != self._UNTRACKED

    def __iter__(self) -> Iterator[int]:
        return (frame for frame, code in enumerate(self.codes) if code)

    def __len__(self) -> int:
        return len(self.codes) - self.codes.count(self._UNTRACKED)

    def clear(self) -> None:
        self.codes[:] = bytes(len(self.codes))

    def _code(self, frame: int) -> int:
        return self.codes[frame] if 0 <= frame < len(self.codes) else self._UNTRACKED


class NonCondOutputs(dict):
    """SAM 2's non-conditioning outputs of one object, plus the frames the window dropped.

    ``dropped[t]`` is 1 where stock SAM 2 would still hold an output that this session
    dropped; SAM 2 storing or removing frame ``t`` (as stock would) clears it. ``looked_up``
    lists the frames SAM 2 asked for (``get``) since it was last read: the memories a step
    attended to, and the previous mask a click starts from.
    """

    def __init__(self, num_frames: int) -> None:
        super().__init__()
        self.dropped = bytearray(num_frames)
        self.looked_up: list[int] = []
        self.stored_at: dict[int, int] = {}  # frame -> store order, oldest first
        self.nbytes = 0
        self._sizes: dict[int, int] = {}

    def get(self, frame: Any, default: Any = None) -> Any:
        self.looked_up.append(frame)
        return super().get(frame, default)

    def __setitem__(self, frame: int, output: dict[str, Any]) -> None:
        self._forget(frame)
        super().__setitem__(frame, output)
        self.stored_at[frame] = next(_TICKS)
        self._sizes[frame] = size = output_nbytes(output)
        self.nbytes += size
        self._undrop(frame)

    def __delitem__(self, frame: int) -> None:
        self._forget(frame)
        super().__delitem__(frame)
        self._undrop(frame)

    def pop(self, frame: Any, *default: Any) -> Any:
        if frame in self:
            self._forget(frame)
        self._undrop(frame)
        return super().pop(frame, *default)

    def clear(self) -> None:
        super().clear()
        self.stored_at.clear()
        self._sizes.clear()
        self.nbytes = 0
        self.dropped[:] = bytes(len(self.dropped))

    def drop(self, frame: int) -> None:
        """Free an output that stock SAM 2 would keep (the retention window moved on)."""
        self._forget(frame)
        super().pop(frame)
        self.dropped[frame] = 1

    def drop_all(self) -> None:
        """Free every output, as a session rebuilt elsewhere holds none."""
        for frame in list(self):
            self.drop(frame)

    def held_by_stock(self) -> bytearray:
        """One byte per frame: 1 where stock SAM 2 holds an output (here or dropped)."""
        held = bytearray(self.dropped)
        for frame in self:
            held[frame] = 1
        return held

    def size_of(self, frame: int) -> int:
        return self._sizes.get(frame, 0)

    def lookups_exact(self) -> bool:
        """Whether every frame SAM 2 looked up since the last call read what stock SAM 2 reads:
        not dropped, and computed exactly. Resets the list."""
        frames, self.looked_up = self.looked_up, []
        n = len(self.dropped)
        return all(
            not (isinstance(t, int) and 0 <= t < n and self.dropped[t])
            and is_exact(super(NonCondOutputs, self).get(t))
            for t in frames
        )

    def _forget(self, frame: int) -> None:
        self.stored_at.pop(frame, None)
        self.nbytes -= self._sizes.pop(frame, 0)

    def _undrop(self, frame: Any) -> None:
        if isinstance(frame, int) and 0 <= frame < len(self.dropped):
            self.dropped[frame] = 0

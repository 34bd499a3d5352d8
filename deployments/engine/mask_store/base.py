"""``MaskStore``: every computed mask of one session as COCO RLE per (frame, object), what
each backend (``sqlite``, ``postgres``) keeps and answers alike.

Each row also keeps its mask's IoU with the object's mask on the frame before (``iou_prev``,
kept current as either side is written or deleted), so the review list and the object
timelines are one SQL query over an hour of masks, not a decode of every RLE.

It lives outside SAM 2's state, so SAM 2 can drop old frame outputs (bounded memory) while
every mask stays readable by frame range and object. A later result for the same (frame,
object) replaces the earlier one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from itertools import groupby

from deployments.protocol.types import RLE, FrameMask, FrameMasks, MaskPage, ReviewItem

# The columns of a mask's row, in this order in both backends (``mask_to_row``).
COLUMNS = "frame, obj, height, width, counts, x, y, w, h, area, score, source, propagation"
# Frames per read of ``frames``: a long video is never loaded whole.
READ_PAGE = 512


class MaskStore(ABC):
    """Masks of one session. Thread-safe; one writer per session (the replica that owns it).

    ``put``, ``put_frames`` and ``delete`` have committed when they return: a frame that a
    propagation reports after its ``put`` is durable, whatever happens to the replica next."""

    def put(self, frame_index: int, masks: Iterable[FrameMask]) -> None:
        """Store (replace) these objects' masks on ``frame_index`` in one transaction."""
        self.put_frames([(frame_index, masks)])

    @abstractmethod
    def put_frames(self, frames: Iterable[tuple[int, Iterable[FrameMask]]]) -> None:
        """Store (replace) the masks of several (frame, masks) in one transaction, in order (a
        bulk load: a propagation puts one frame per commit, so it can report it at once)."""

    @abstractmethod
    def delete(self, obj_id: int | None = None, frame_index: int | None = None) -> None:
        """Delete an object's masks, a frame's, one (frame, object)'s, or everything."""

    @abstractmethod
    def review(
        self, score_threshold: float, iou_threshold: float, obj_id: int | None = None
    ) -> list[ReviewItem]:
        """Frames worth a look, worst first: an object's score below ``score_threshold``, an
        object lost (empty) right after being present, or its mask's IoU with the previous
        frame's below ``iou_threshold``. Of every object, or of ``obj_id``."""

    @abstractmethod
    def masked_frames(self) -> dict[int, int]:
        """Per object, the number of frames on which it has a non-empty mask."""

    @abstractmethod
    def ranges(self, obj_id: int) -> list[tuple[int, int]]:
        """[first, last] of each run of consecutive frames where the object has a non-empty
        mask, in order: a timeline of an hour-long video in one indexed query."""

    @abstractmethod
    def last_propagation_id(self) -> int:
        """The highest propagation id stored (0: none), so a session reopened on another
        replica numbers its next propagation after the ones whose masks it keeps."""

    @abstractmethod
    def propagated(self, propagation_id: int) -> list[tuple[int, int]]:
        """(frame, object) of every mask the propagation computed that is still stored."""

    @abstractmethod
    def close(self) -> None:
        """Release what this process holds for the store; the masks stay."""

    @abstractmethod
    def drop(self) -> None:
        """Delete every mask of the session for good (the session is deleted). Callable after
        ``close``."""

    @abstractmethod
    def _select(self, low: int, high: int, obj_id: int | None, frames: int) -> list[tuple]:
        """Rows (``COLUMNS``) of up to ``frames`` whole frames from [low, high], ordered by
        frame and object; only ``obj_id``'s where given."""

    def frame(self, frame_index: int) -> list[FrameMask]:
        """Every object's mask on one frame, by object id."""
        return [m for frame in self.frames(frame_index, frame_index) for m in frame.masks]

    def frames(
        self, start: int | None = None, end: int | None = None, obj_id: int | None = None
    ) -> Iterator[FrameMasks]:
        """Frames in [start, end] (inclusive) that have masks, in order; optionally one object.

        Reads in pages so a long video is never loaded whole.
        """
        low, high = start if start is not None else 0, end if end is not None else 2**62
        last = low - 1
        while True:
            rows = self._select(last + 1, high, obj_id, READ_PAGE)
            if not rows:
                return
            for frame_index, group in groupby(rows, key=lambda r: r[0]):
                yield FrameMasks(frame_index=frame_index, masks=[row_to_mask(r) for r in group])
            last = rows[-1][0]
            if len({r[0] for r in rows}) < READ_PAGE:
                return

    def page(self, start: int | None, end: int | None, obj_id: int | None, limit: int) -> MaskPage:
        """At most ``limit`` frames of ``frames(start, end, obj_id)``, and the first frame of the
        next page (None when the range is exhausted)."""
        frames: list[FrameMasks] = []
        for frame in self.frames(start, end, obj_id):
            if len(frames) == limit:
                return MaskPage(frames=frames, next_start=frame.frame_index)
            frames.append(frame)
        return MaskPage(frames=frames, next_start=None)


def review_items(rows: Iterable[tuple]) -> list[ReviewItem]:
    """(frame, object, reason, value) rows of a review query, worst first."""
    items = [ReviewItem(frame, obj, reason, round(value, 4)) for frame, obj, reason, value in rows]
    return sorted(items, key=lambda item: (item.value, item.frame_index, item.obj_id))


def mask_to_row(frame_index: int, m: FrameMask) -> tuple:
    """A mask as the values of ``COLUMNS``."""
    height, width = m.rle.size
    x, y, w, h = m.bbox
    return (
        frame_index,
        m.obj_id,
        height,
        width,
        m.rle.counts,
        x,
        y,
        w,
        h,
        m.area,
        m.score,
        m.source,
        m.propagation_id,
    )


def row_to_mask(row: tuple) -> FrameMask:
    _, obj, height, width, counts, x, y, w, h, area, score, source, propagation = row
    return FrameMask(
        obj_id=obj,
        rle=RLE(size=(height, width), counts=counts),
        bbox=(x, y, w, h),
        area=area,
        score=score,
        source=source,
        propagation_id=propagation,
    )

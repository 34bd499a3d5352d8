"""``MaskStore``: every computed mask as COCO RLE per (frame, object), on the session's disk.

Each row also keeps its mask's IoU with the object's mask on the frame before (``iou_prev``,
kept current as either side is written or deleted), so the review list and the object
timelines are one SQL query over an hour of masks, not a decode of every RLE.

It lives outside SAM 2's state, so SAM 2 can drop old frame outputs (bounded memory) while
every mask stays readable by frame range and object. A later result for the same (frame,
object) replaces the earlier one. SQLite (stdlib) gives atomic upserts and range reads in one
file; one writer per session (the replica that owns it), so the database is opened in WAL mode
with an exclusive lock: a commit is a write to the log, not an fsync (12x the frames per second
of SQLite's default journal), it survives the process being killed, and no shared-memory file
is needed (WAL's -shm does not work on network filesystems).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from itertools import groupby
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from deployments.protocol.types import RLE, FrameMask, FrameMasks, MaskPage, MaskSource, ReviewItem

_SCHEMA = """
CREATE TABLE IF NOT EXISTS masks (
    frame INTEGER NOT NULL,
    obj INTEGER NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    counts TEXT NOT NULL,
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,
    area INTEGER NOT NULL,
    score REAL NOT NULL,
    source TEXT,
    propagation INTEGER,
    iou_prev REAL,
    PRIMARY KEY (frame, obj)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS masks_by_obj ON masks (obj, frame);
"""
# A stored mask as its IoU needs it: RLE and area.
_Stored = tuple[RLE, int]
# Columns added after the first release: a session directory written by an older replica gets
# them (NULL: not recorded) when it is reopened.
_ADDED_COLUMNS = {"source": "TEXT", "propagation": "INTEGER", "iou_prev": "REAL"}
_COLUMNS = "frame, obj, height, width, counts, x, y, w, h, area, score, source, propagation"
_PLACEHOLDERS = ",".join("?" * len(_COLUMNS.split(",")))
_SET_IOU_PREV = "UPDATE masks SET iou_prev = ? WHERE frame = ? AND obj = ?"
# Review candidates of every object (or one): its frames with the previous frame's area where
# that frame is the one right before. Lost: empty after present; low score: present with a low
# score; area jump: present on both with a low IoU. Thresholds and object filter are bound.
_REVIEW = """
WITH rows AS (
    SELECT frame, obj, area, score, iou_prev,
           CASE WHEN LAG(frame) OVER w = frame - 1 THEN LAG(area) OVER w END AS prev_area
    FROM masks {where}
    WINDOW w AS (PARTITION BY obj ORDER BY frame)
)
SELECT frame, obj, 'lost', 0.0 FROM rows WHERE area = 0 AND prev_area > 0
UNION ALL
SELECT frame, obj, 'low_score', score FROM rows WHERE area > 0 AND score < :score
UNION ALL
SELECT frame, obj, 'area_jump', iou_prev FROM rows WHERE iou_prev < :iou
"""
# Runs of consecutive frames with a non-empty mask of one object (gaps and islands: within a
# run, frame minus its rank is constant).
_RANGES = """
SELECT MIN(frame), MAX(frame) FROM (
    SELECT frame, frame - ROW_NUMBER() OVER (ORDER BY frame) AS run
    FROM masks WHERE obj = ? AND area > 0
) GROUP BY run ORDER BY 1
"""


def encode_masks(
    obj_ids: list[int],
    masks: np.ndarray,
    scores: list[float],
    sources: list[MaskSource] | None = None,
    propagation_id: int | None = None,
) -> list[FrameMask]:
    """``masks``: bool array [N, H, W], one per object id -> FrameMasks with RLE, bbox, area,
    and where each came from (``sources``, one per object; ``propagation_id`` for those that
    a propagation computed)."""
    if not obj_ids:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    return [
        FrameMask(
            obj_id=obj_id,
            rle=RLE(size=tuple(rle["size"]), counts=rle["counts"].decode("ascii")),
            bbox=tuple(round(v) for v in box),
            area=int(area),
            score=float(score),
            source=source,
            propagation_id=propagation_id if source == "propagation" else None,
        )
        for obj_id, rle, area, box, score, source in zip(
            obj_ids, rles, areas, boxes, scores, sources or [None] * len(obj_ids), strict=True
        )
    ]


def decode_mask(rle: RLE) -> np.ndarray:
    """An RLE as a bool [H, W] array."""
    return mask_utils.decode(_coco(rle)).astype(bool)


class MaskStore:
    """Masks of one session in ``<session dir>/masks.sqlite``. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def put(self, frame_index: int, masks: Iterable[FrameMask]) -> None:
        """Store (replace) these objects' masks on ``frame_index`` in one transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for mask in masks:
                this = (mask.rle, mask.area)
                before = self._stored(frame_index - 1, mask.obj_id)
                self._db.execute(
                    f"INSERT OR REPLACE INTO masks ({_COLUMNS}, iou_prev) "
                    f"VALUES ({_PLACEHOLDERS}, ?)",
                    (*_mask_to_row(frame_index, mask), _iou(this, before)),
                )
                after = self._stored(frame_index + 1, mask.obj_id)
                if after is not None:
                    update = (_iou(after, this), frame_index + 1, mask.obj_id)
                    self._db.execute(_SET_IOU_PREV, update)

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
        page, last = 512, low - 1
        while True:
            rows = self._select(last + 1, high, obj_id, page)
            if not rows:
                return
            for frame_index, group in groupby(rows, key=lambda r: r[0]):
                yield FrameMasks(frame_index=frame_index, masks=[_row_to_mask(r) for r in group])
            last = rows[-1][0]
            if len({r[0] for r in rows}) < page:
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

    def delete(self, obj_id: int | None = None, frame_index: int | None = None) -> None:
        """Delete an object's masks, a frame's, one (frame, object)'s, or everything."""
        where, args = _where(obj_id, frame_index)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(f"DELETE FROM masks {where}", args)
            if frame_index is not None:  # the next frame has no mask before it now
                after, after_args = _where(obj_id, frame_index + 1)
                self._db.execute(f"UPDATE masks SET iou_prev = NULL {after}", after_args)

    def review(
        self, score_threshold: float, iou_threshold: float, obj_id: int | None = None
    ) -> list[ReviewItem]:
        """Frames worth a look, worst first: an object's score below ``score_threshold``, an
        object lost (empty) right after being present, or its mask's IoU with the previous
        frame's below ``iou_threshold``. Of every object, or of ``obj_id``."""
        query = _REVIEW.format(where="" if obj_id is None else "WHERE obj = :obj")
        params = {"score": score_threshold, "iou": iou_threshold, "obj": obj_id}
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        items = [
            ReviewItem(frame, obj, reason, round(value, 4)) for frame, obj, reason, value in rows
        ]
        return sorted(items, key=lambda item: (item.value, item.frame_index, item.obj_id))

    def masked_frames(self) -> dict[int, int]:
        """Per object, the number of frames on which it has a non-empty mask."""
        with self._lock:
            rows = self._db.execute(
                "SELECT obj, COUNT(*) FROM masks WHERE area > 0 GROUP BY obj"
            ).fetchall()
        return dict(rows)

    def ranges(self, obj_id: int) -> list[tuple[int, int]]:
        """[first, last] of each run of consecutive frames where the object has a non-empty
        mask, in order: a timeline of an hour-long video in one indexed query."""
        with self._lock:
            return [(first, last) for first, last in self._db.execute(_RANGES, (obj_id,))]

    def last_propagation_id(self) -> int:
        """The highest propagation id stored (0: none), so a session reopened on another
        replica numbers its next propagation after the ones whose masks it keeps."""
        with self._lock:
            (last,) = self._db.execute("SELECT MAX(propagation) FROM masks").fetchone()
        return last or 0

    def propagated(self, propagation_id: int) -> list[tuple[int, int]]:
        """(frame, object) of every mask the propagation computed that is still stored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT frame, obj FROM masks WHERE propagation = ?", (propagation_id,)
            )
            return [(frame, obj) for frame, obj in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _stored(self, frame_index: int, obj_id: int) -> _Stored | None:
        row = self._db.execute(
            "SELECT height, width, counts, area FROM masks WHERE frame = ? AND obj = ?",
            (frame_index, obj_id),
        ).fetchone()
        return None if row is None else (RLE(size=row[:2], counts=row[2]), row[3])

    def _add_missing_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(masks)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE masks ADD COLUMN {name} {kind}")
        if "iou_prev" not in present:
            self._fill_iou_prev()

    def _fill_iou_prev(self) -> None:
        """Compute every row's IoU with the frame before (a store from an older replica)."""
        rows = self._db.execute(
            "SELECT frame, obj, height, width, counts, area FROM masks ORDER BY obj, frame"
        ).fetchall()
        updates, last = [], None
        for frame, obj, height, width, counts, area in rows:
            this = (RLE(size=(height, width), counts=counts), area)
            adjacent = last is not None and last[:2] == (frame - 1, obj)
            updates.append((_iou(this, last[2] if adjacent else None), frame, obj))
            last = (frame, obj, this)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(_SET_IOU_PREV, updates)

    def _select(self, low: int, high: int, obj_id: int | None, frames: int) -> list[tuple]:
        """Rows of up to ``frames`` whole frames from [low, high]."""
        obj_filter = "AND obj = ?" if obj_id is not None else ""
        args = (low, high, *([obj_id] if obj_id is not None else []))
        query = (
            f"SELECT {_COLUMNS} FROM masks WHERE frame IN ("
            f"SELECT DISTINCT frame FROM masks WHERE frame BETWEEN ? AND ? {obj_filter} "
            f"ORDER BY frame LIMIT {frames}) {obj_filter} ORDER BY frame, obj"
        )
        with self._lock:
            return self._db.execute(query, args + args[2:]).fetchall()


def _where(obj_id: int | None, frame_index: int | None) -> tuple[str, tuple[int, ...]]:
    clauses, args = [], []
    if obj_id is not None:
        clauses.append("obj = ?")
        args.append(obj_id)
    if frame_index is not None:
        clauses.append("frame = ?")
        args.append(frame_index)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _iou(a: _Stored | None, b: _Stored | None) -> float | None:
    """IoU of two masks of one object; None unless both exist and are non-empty."""
    if a is None or b is None or a[1] == 0 or b[1] == 0:
        return None
    if a[0].counts == b[0].counts:
        return 1.0
    return float(mask_utils.iou([_coco(a[0])], [_coco(b[0])], [0])[0][0])


def _coco(rle: RLE) -> dict:
    return {"size": list(rle.size), "counts": rle.counts.encode("ascii")}


def _mask_to_row(frame_index: int, m: FrameMask) -> tuple:
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


def _row_to_mask(row: tuple) -> FrameMask:
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

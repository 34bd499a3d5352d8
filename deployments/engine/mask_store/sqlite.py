"""``SqliteMaskStore``: a session's masks in ``<session dir>/masks.sqlite``, the default backend.

SQLite (stdlib) gives atomic upserts and range reads in one file; one writer per session (the
replica that owns it), so the database is opened in WAL mode with an exclusive lock: a commit
is a write to the log, not an fsync (12x the frames per second of SQLite's default journal), it
survives the process being killed, and no shared-memory file is needed (WAL's -shm does not
work on network filesystems).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from deployments.engine.mask_store.base import COLUMNS, MaskStore, mask_to_row, review_items
from deployments.engine.mask_store.rle import Stored, iou
from deployments.protocol.types import RLE, FrameMask, ReviewItem

# The file a session directory keeps its masks in: where it exists, the session reads SQLite
# whatever backend is configured (sessions made before PostgreSQL keep working).
FILE_NAME = "masks.sqlite"

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
# Columns added after the first release: a session directory written by an older replica gets
# them (NULL: not recorded) when it is reopened.
_ADDED_COLUMNS = {"source": "TEXT", "propagation": "INTEGER", "iou_prev": "REAL"}
_PLACEHOLDERS = ",".join("?" * len(COLUMNS.split(",")))
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


class SqliteMaskStore(MaskStore):
    """Masks of one session in ``path`` (``<session dir>/masks.sqlite``). Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def put_frames(self, frames: Iterable[tuple[int, Iterable[FrameMask]]]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for frame_index, masks in frames:
                for mask in masks:
                    self._put_one(frame_index, mask)

    def delete(self, obj_id: int | None = None, frame_index: int | None = None) -> None:
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
        query = _REVIEW.format(where="" if obj_id is None else "WHERE obj = :obj")
        params = {"score": score_threshold, "iou": iou_threshold, "obj": obj_id}
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return review_items(rows)

    def masked_frames(self) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT obj, COUNT(*) FROM masks WHERE area > 0 GROUP BY obj"
            ).fetchall()
        return dict(rows)

    def ranges(self, obj_id: int) -> list[tuple[int, int]]:
        with self._lock:
            return [(first, last) for first, last in self._db.execute(_RANGES, (obj_id,))]

    def last_propagation_id(self) -> int:
        with self._lock:
            (last,) = self._db.execute("SELECT MAX(propagation) FROM masks").fetchone()
        return last or 0

    def propagated(self, propagation_id: int) -> list[tuple[int, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT frame, obj FROM masks WHERE propagation = ?", (propagation_id,)
            )
            return [(frame, obj) for frame, obj in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def drop(self) -> None:
        """The file goes (the session directory with it, as the engine removes that)."""
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def _put_one(self, frame_index: int, mask: FrameMask) -> None:
        """Upsert one mask and keep its and the next frame's ``iou_prev`` (in a transaction)."""
        this = (mask.rle, mask.area)
        before = self._stored(frame_index - 1, mask.obj_id)
        self._db.execute(
            f"INSERT OR REPLACE INTO masks ({COLUMNS}, iou_prev) VALUES ({_PLACEHOLDERS}, ?)",
            (*mask_to_row(frame_index, mask), iou(this, before)),
        )
        after = self._stored(frame_index + 1, mask.obj_id)
        if after is not None:
            self._db.execute(_SET_IOU_PREV, (iou(after, this), frame_index + 1, mask.obj_id))

    def _stored(self, frame_index: int, obj_id: int) -> Stored | None:
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
            updates.append((iou(this, last[2] if adjacent else None), frame, obj))
            last = (frame, obj, this)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(_SET_IOU_PREV, updates)

    def _select(self, low: int, high: int, obj_id: int | None, frames: int) -> list[tuple]:
        obj_filter = "AND obj = ?" if obj_id is not None else ""
        args = (low, high, *([obj_id] if obj_id is not None else []))
        query = (
            f"SELECT {COLUMNS} FROM masks WHERE frame IN ("
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

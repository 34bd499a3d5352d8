"""``PostgresMaskStore``: sessions' masks in one PostgreSQL table keyed by session id, so a
session rebuilt on another node finds its masks there with no shared volume.

``MaskDatabase`` is one replica process's small connection pool (psycopg_pool), shared by its
sessions, and applies the schema's migrations when it opens. Each ``put`` is one transaction
of two round trips: BEGIN and one read of the neighbouring frames' masks (for ``iou_prev``);
then the frame's rows upserted in one statement (``unnest`` of binary arrays), the next frame's
``iou_prev`` updated and COMMIT, in one pipeline. ``put_frames`` writes as many frames as it is
given in one transaction; from 1,000 masks on, the rows not stored yet go by a binary COPY
first (1.4x the frames per second of the upsert alone). It has committed when it returns, so a
frame a propagation reports after its ``put`` is in the database.

Where the database cannot be reached or fails mid-operation, the store raises
``StoreUnavailableError`` (503 with Retry-After): the operation did not happen, the masks
committed before it stay.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from deployments.engine.mask_store.base import COLUMNS, MaskStore, mask_to_row, review_items
from deployments.engine.mask_store.migrations import migrate
from deployments.engine.mask_store.rle import Stored, iou
from deployments.protocol.errors import StoreUnavailableError
from deployments.protocol.types import RLE, FrameMask, ReviewItem

P = ParamSpec("P")
T = TypeVar("T")

# One statement for a frame's masks: the rows as arrays, one per column (``unnest``).
_COLUMN_TYPES = "int[] int[] int[] int[] text[] int[] int[] int[] int[] int[] float8[] text[] int[]"
_UPSERT = (
    f"INSERT INTO masks (session, {COLUMNS}, iou_prev) SELECT %s, * FROM unnest("
    + ", ".join(f"%b::{kind}" for kind in [*_COLUMN_TYPES.split(), "float8[]"])
    + ") ON CONFLICT (session, frame, obj) DO UPDATE SET "
    + ", ".join(
        f"{c} = EXCLUDED.{c}" for c in [*(c.strip() for c in COLUMNS.split(",")[2:]), "iou_prev"]
    )
)
# A bulk load (``put_frames`` of at least this many masks) writes its new rows with COPY.
_COPY_ROWS = 1000
_COPY = f"COPY masks (session, {COLUMNS}, iou_prev) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = [
    "text",
    *_COLUMN_TYPES.replace("int[]", "int4[]").replace("[]", "").split(),
    "float8",
]
_NEIGHBOURS = (
    "SELECT frame, obj, height, width, counts, area FROM masks "
    "WHERE session = %s AND frame = ANY(%s) AND obj = ANY(%s)"
)
_SET_IOU_PREV = "UPDATE masks SET iou_prev = %s WHERE session = %s AND frame = %s AND obj = %s"
# As SQLite's (sqlite.py), within one session.
_REVIEW = """
WITH marked AS (
    SELECT frame, obj, area, score, iou_prev,
           CASE WHEN LAG(frame) OVER w = frame - 1 THEN LAG(area) OVER w END AS prev_area
    FROM masks WHERE session = %(session)s {obj}
    WINDOW w AS (PARTITION BY obj ORDER BY frame)
)
SELECT frame, obj, 'lost', 0.0::float8 FROM marked WHERE area = 0 AND prev_area > 0
UNION ALL
SELECT frame, obj, 'low_score', score FROM marked WHERE area > 0 AND score < %(score)s
UNION ALL
SELECT frame, obj, 'area_jump', iou_prev FROM marked WHERE iou_prev < %(iou)s
"""
_RANGES = """
SELECT MIN(frame), MAX(frame) FROM (
    SELECT frame, frame - ROW_NUMBER() OVER (ORDER BY frame) AS run
    FROM masks WHERE session = %s AND obj = %s AND area > 0
) AS runs GROUP BY run ORDER BY 1
"""


def _unavailable(method: Callable[P, T]) -> Callable[P, T]:
    """The database's outages as the project's error: the operation did not happen."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise StoreUnavailableError(f"the mask database is unavailable: {error}") from error

    return wrapper


class MaskDatabase:
    """The connection pool of one replica process (``min_size`` 1, at most ``pool_size``; idle
    connections closed after a minute), so many replicas share one server's connection limit.
    Opening it applies the pending migrations; StoreUnavailableError if the server does not
    answer within ``timeout_s``."""

    def __init__(self, url: str, pool_size: int, timeout_s: float = 10.0) -> None:
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            max_idle=60,
            timeout=timeout_s,
            name="sam2-serve-masks",
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=timeout_s)
            with self.pool.connection() as conn:
                migrate(conn)
        except (psycopg.OperationalError, PoolTimeout) as error:
            self.pool.close()
            raise StoreUnavailableError(f"the mask database is unavailable: {error}") from error
        except BaseException:
            self.pool.close()
            raise

    def store(self, session_id: str) -> PostgresMaskStore:
        return PostgresMaskStore(self.pool, session_id)

    def close(self) -> None:
        self.pool.close()


class PostgresMaskStore(MaskStore):
    """Masks of session ``session_id`` in the ``masks`` table. Thread-safe: writes of one store
    are serialized (they read the neighbours they update), reads take any pooled connection."""

    def __init__(self, pool: ConnectionPool, session_id: str) -> None:
        self._pool = pool
        self.session_id = session_id
        self._write = threading.Lock()

    @_unavailable
    def put_frames(self, frames: Iterable[tuple[int, Iterable[FrameMask]]]) -> None:
        batch = [(frame, list(masks)) for frame, masks in frames]
        objs = sorted({m.obj_id for _, masks in batch for m in masks})
        if not objs:
            return
        sid = self.session_id
        near_frames = sorted({f + d for f, _ in batch for d in (-1, 0, 1)})
        with self._write, self._pool.connection() as conn:
            with conn.pipeline():  # one round trip: BEGIN and the neighbours' read
                near: dict[tuple[int, int], Stored] = {
                    (frame, obj): (RLE(size=(height, width), counts=counts), area)
                    for frame, obj, height, width, counts, area in conn.execute(
                        _NEIGHBOURS, (sid, near_frames, objs)
                    ).fetchall()
                }
            stored = set(near)
            rows: dict[tuple[int, int], list] = {}  # written here, by (frame, object)
            updates: dict[tuple[int, int], float | None] = {}  # iou_prev of stored rows
            for frame, masks in batch:
                for mask in masks:
                    this: Stored = (mask.rle, mask.area)
                    before = near.get((frame - 1, mask.obj_id))
                    rows[frame, mask.obj_id] = [*mask_to_row(frame, mask), iou(this, before)]
                    updates.pop((frame, mask.obj_id), None)  # rewritten: its own iou_prev
                    near[frame, mask.obj_id] = this
                    key = (frame + 1, mask.obj_id)
                    if key in rows:
                        rows[key][-1] = iou(near[key], this)
                    elif key in near:
                        updates[key] = iou(near[key], this)
            upsert = list(rows.values())
            if len(rows) >= _COPY_ROWS:  # a bulk load: rows not stored yet go by COPY
                upsert = [row for key, row in rows.items() if key in stored]
                with conn.cursor().copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for key, row in rows.items():
                        if key not in stored:
                            copy.write_row((sid, *row))
            # One round trip: the upsert, the iou_prev of the stored frames after written
            # ones, and COMMIT in one pipeline.
            with conn.pipeline():
                if upsert:
                    columns = [list(column) for column in zip(*upsert, strict=True)]
                    conn.execute(_UPSERT, (sid, *columns))
                if updates:
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            _SET_IOU_PREV, [(v, sid, f, o) for (f, o), v in updates.items()]
                        )
                conn.commit()

    @_unavailable
    def delete(self, obj_id: int | None = None, frame_index: int | None = None) -> None:
        where, args = _where(obj_id, frame_index)
        with self._write, self._pool.connection() as conn:
            conn.execute(f"DELETE FROM masks WHERE session = %s {where}", (self.session_id, *args))
            if frame_index is not None:  # the next frame has no mask before it now
                after, after_args = _where(obj_id, frame_index + 1)
                conn.execute(
                    f"UPDATE masks SET iou_prev = NULL WHERE session = %s {after}",
                    (self.session_id, *after_args),
                )

    @_unavailable
    def review(
        self, score_threshold: float, iou_threshold: float, obj_id: int | None = None
    ) -> list[ReviewItem]:
        query = _REVIEW.format(obj="" if obj_id is None else "AND obj = %(obj)s")
        params = {
            "session": self.session_id,
            "score": score_threshold,
            "iou": iou_threshold,
            "obj": obj_id,
        }
        return review_items(self._fetch(query, params))

    @_unavailable
    def masked_frames(self) -> dict[int, int]:
        query = "SELECT obj, COUNT(*) FROM masks WHERE session = %s AND area > 0 GROUP BY obj"
        return dict(self._fetch(query, (self.session_id,)))

    @_unavailable
    def ranges(self, obj_id: int) -> list[tuple[int, int]]:
        return [(first, last) for first, last in self._fetch(_RANGES, (self.session_id, obj_id))]

    @_unavailable
    def last_propagation_id(self) -> int:
        query = "SELECT MAX(propagation) FROM masks WHERE session = %s"
        [(last,)] = self._fetch(query, (self.session_id,))
        return last or 0

    @_unavailable
    def propagated(self, propagation_id: int) -> list[tuple[int, int]]:
        query = "SELECT frame, obj FROM masks WHERE session = %s AND propagation = %s"
        return [
            (frame, obj) for frame, obj in self._fetch(query, (self.session_id, propagation_id))
        ]

    def close(self) -> None:
        """Nothing to release: the pool is the replica's (``MaskDatabase``)."""

    @_unavailable
    def drop(self) -> None:
        with self._write, self._pool.connection() as conn:
            conn.execute("DELETE FROM masks WHERE session = %s", (self.session_id,))

    @_unavailable
    def _select(self, low: int, high: int, obj_id: int | None, frames: int) -> list[tuple]:
        params = {"session": self.session_id, "low": low, "high": high, "obj": obj_id}
        if obj_id is not None:  # one row per frame: a range of the (session, obj, frame) index
            query = (
                f"SELECT {COLUMNS} FROM masks WHERE session = %(session)s AND obj = %(obj)s "
                f"AND frame BETWEEN %(low)s AND %(high)s ORDER BY frame LIMIT {int(frames)}"
            )
        else:  # a range of the primary key up to the page's last frame (whatever the stats)
            query = (
                f"SELECT {COLUMNS} FROM masks WHERE session = %(session)s "
                "AND frame BETWEEN %(low)s AND (SELECT MAX(frame) FROM ("
                "SELECT DISTINCT frame FROM masks WHERE session = %(session)s "
                f"AND frame BETWEEN %(low)s AND %(high)s ORDER BY frame LIMIT {int(frames)}"
                ") AS page) ORDER BY frame, obj"
            )
        return self._fetch(query, params)

    def _fetch(self, query: str, params: tuple | dict) -> list[tuple]:
        with self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()


def _where(obj_id: int | None, frame_index: int | None) -> tuple[str, tuple[int, ...]]:
    clauses, args = [], []
    if obj_id is not None:
        clauses.append("AND obj = %s")
        args.append(obj_id)
    if frame_index is not None:
        clauses.append("AND frame = %s")
        args.append(frame_index)
    return " ".join(clauses), tuple(args)

"""MaskStore, on SQLite and on PostgreSQL alike: replace semantics, range and object reads,
paging over long videos, the review list kept current whatever order masks are written and
deleted in; then what only one backend does (SQLite's older files, PostgreSQL's migrations,
sessions sharing one table, outages)."""

from __future__ import annotations

import random
import uuid

import numpy as np
import psycopg
import pytest
from pycocotools import mask as mask_utils

from deployments.engine.mask_store import (
    MaskStores,
    SqliteMaskStore,
    decode_mask,
    encode_masks,
)
from deployments.engine.mask_store.migrations import migrate, migrations
from deployments.engine.mask_store.postgres import MaskDatabase
from deployments.protocol.errors import StoreUnavailableError


@pytest.fixture(scope="module")
def database(postgres_url):
    database = MaskDatabase(postgres_url, pool_size=2)
    yield database
    database.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteMaskStore(tmp_path / "masks.sqlite")
    else:
        store = request.getfixturevalue("database").store(f"test-{uuid.uuid4().hex}")
    yield store
    store.drop()


def square(top: int, left: int, side: int, shape=(20, 30)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_encoding_round_trips_with_bbox_and_area():
    masks = np.stack([square(2, 3, 5), np.zeros((20, 30), bool)])
    first, empty = encode_masks([1, 2], masks, [0.9, 0.1])
    assert (first.bbox, first.area, first.score) == ((3, 2, 5, 5), 25, 0.9)
    assert (decode_mask(first.rle) == masks[0]).all()
    assert (empty.area, empty.bbox) == (0, (0, 0, 0, 0))


def test_later_result_for_a_frame_and_object_replaces_the_earlier(store):
    store.put(4, encode_masks([1, 2], np.stack([square(0, 0, 3), square(5, 5, 3)]), [0.5, 0.5]))
    store.put(4, encode_masks([1], square(1, 1, 4)[None], [0.8]))
    first, second = store.frame(4)
    assert (first.obj_id, first.area, first.score) == (1, 16, 0.8)
    assert (second.obj_id, second.area) == (2, 9)


def test_reads_by_range_and_object(store):
    for frame in range(10):
        store.put(frame, encode_masks([1, 2], np.stack([square(0, 0, 2)] * 2), [1.0, 1.0]))
    assert [f.frame_index for f in store.frames(3, 5)] == [3, 4, 5]
    only_two = list(store.frames(obj_id=2))
    assert len(only_two) == 10 and all([m.obj_id for m in f.masks] == [2] for f in only_two)
    assert store.masked_frames() == {1: 10, 2: 10}


def test_long_ranges_are_read_in_pages_without_losing_frames(store):
    mask = encode_masks([1], square(0, 0, 2)[None], [1.0])
    for frame in range(0, 2400, 2):
        store.put(frame, mask)
    assert [f.frame_index for f in store.frames()] == list(range(0, 2400, 2))
    assert [f.frame_index for f in store.frames(1001, 1011)] == list(range(1002, 1011, 2))


def test_deletes(store):
    for frame in range(3):
        store.put(frame, encode_masks([1, 2], np.stack([square(0, 0, 2)] * 2), [1.0, 1.0]))
    store.delete(obj_id=1, frame_index=0)
    assert [m.obj_id for m in store.frame(0)] == [2]
    store.delete(obj_id=2)
    assert [f.frame_index for f in store.frames()] == [1, 2]
    store.delete()
    assert list(store.frames()) == []


def test_an_hour_of_ten_objects_is_stored_paged_and_counted(store):
    """108,000 frames (an hour at 30 fps) x 10 objects: range reads and pages stay small."""
    frames, objects = 108_000, list(range(1, 11))
    masks = encode_masks(objects, np.stack([square(o, o, 3) for o in objects]), [0.9] * 10)
    for first in range(0, frames, 1000):  # a bulk load: 1000 frames per transaction
        store.put_frames((frame, masks) for frame in range(first, first + 1000))
    assert store.masked_frames() == dict.fromkeys(objects, frames)
    middle = list(store.frames(54_000, 54_099, obj_id=7))
    assert [f.frame_index for f in middle] == list(range(54_000, 54_100))
    assert all([m.obj_id for m in f.masks] == [7] for f in middle)
    first = store.page(None, None, None, limit=500)
    assert [f.frame_index for f in first.frames] == list(range(500)) and first.next_start == 500
    assert all(len(f.masks) == 10 for f in first.frames)
    last = store.page(107_800, None, 3, limit=500)
    assert len(last.frames) == 200 and last.next_start is None


def test_a_page_ends_where_the_next_starts(store):
    for frame in (2, 4, 6, 8, 10):
        store.put(frame, encode_masks([1], square(0, 0, 2)[None], [1.0]))
    first = store.page(3, None, None, limit=2)
    assert [f.frame_index for f in first.frames] == [4, 6] and first.next_start == 8
    second = store.page(first.next_start, 9, None, limit=2)
    assert [f.frame_index for f in second.frames] == [8] and second.next_start is None


def test_where_each_mask_came_from_is_stored(store):
    masks = np.stack([square(0, 0, 3), square(5, 5, 3)])
    store.put(2, encode_masks([1, 2], masks, [0.9, 0.8], ["prompt", "propagation"], 3))
    prompted, tracked = store.frame(2)
    assert (prompted.source, prompted.propagation_id) == ("prompt", None)
    assert (tracked.source, tracked.propagation_id) == ("propagation", 3)
    assert store.last_propagation_id() == 3


def test_runs_of_masked_frames_per_object(store):
    for frame in (*range(0, 5), *range(9, 12), 20):
        store.put(frame, encode_masks([1], square(0, 0, 2)[None], [1.0]))
    store.put(3, encode_masks([1], np.zeros((1, 20, 30), bool), [0.1]))  # lost: a gap
    store.put(30, encode_masks([2], square(0, 0, 2)[None], [1.0]))
    assert store.ranges(1) == [(0, 2), (4, 4), (9, 11), (20, 20)]
    assert store.ranges(2) == [(30, 30)] and store.ranges(3) == []


def test_a_store_written_before_mask_sources_is_reopened_with_them(tmp_path):
    """A session directory from an older replica: its masks read back, sources unrecorded."""
    import sqlite3

    path = tmp_path / "masks.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE masks (frame INTEGER NOT NULL, obj INTEGER NOT NULL, "
            "height INTEGER NOT NULL, width INTEGER NOT NULL, counts TEXT NOT NULL, "
            "x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL, "
            "area INTEGER NOT NULL, score REAL NOT NULL, PRIMARY KEY (frame, obj)) WITHOUT ROWID"
        )
        old = encode_masks([1], square(0, 0, 2)[None], [0.5])[0]
        db.execute(
            "INSERT INTO masks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (0, 1, *old.rle.size, old.rle.counts, *old.bbox, old.area, old.score),
        )
        moved = encode_masks([1], square(1, 1, 2)[None], [0.5])[0]
        db.execute(
            "INSERT INTO masks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (1, 1, *moved.rle.size, moved.rle.counts, *moved.bbox, moved.area, moved.score),
        )
    store = SqliteMaskStore(path)
    try:
        assert [(i.frame_index, i.reason) for i in store.review(0.0, 0.5)] == [(1, "area_jump")]
        (mask, _) = [m for f in store.frames() for m in f.masks]
        assert (mask.area, mask.source, mask.propagation_id) == (4, None, None)
        assert store.last_propagation_id() == 0
        store.put(2, encode_masks([1], square(0, 0, 2)[None], [0.5], ["propagation"], 1))
        assert store.frame(2)[0].propagation_id == 1
    finally:
        store.close()


def reference_review(store, min_score, min_iou) -> list[tuple]:
    """The review list computed from scratch by decoding every stored mask in frame order."""
    items, previous = [], {}
    for frame in store.frames():
        for m in frame.masks:
            before = previous.get(m.obj_id)
            before = before[1] if before and before[0] == frame.frame_index - 1 else None
            previous[m.obj_id] = (frame.frame_index, m)
            if before is not None and before.area > 0 and m.area == 0:
                items.append((frame.frame_index, m.obj_id, "lost", 0.0))
                continue
            if m.area > 0 and m.score < min_score:
                items.append((frame.frame_index, m.obj_id, "low_score", round(m.score, 4)))
            if before is not None and before.area > 0 and m.area > 0:
                rles = [dict(x.rle.model_dump(), counts=x.rle.counts.encode()) for x in (m, before)]
                iou = float(mask_utils.iou(rles[:1], rles[1:], [0])[0][0])
                if iou < min_iou:
                    items.append((frame.frame_index, m.obj_id, "area_jump", round(iou, 4)))
    return sorted(items, key=lambda i: (i[3], i[0], i[1]))


def test_review_stays_current_whatever_order_masks_are_written_and_deleted(store):
    """Backward propagations write frame k before k - 1, refinements rewrite one frame, clears
    delete one: the stored IoU with the previous frame follows every one of them."""
    rng = random.Random(7)
    for _ in range(300):
        frame, obj = rng.randrange(30), rng.randrange(1, 4)
        if rng.random() < 0.15:
            store.delete(obj_id=obj if rng.random() < 0.5 else None, frame_index=frame)
            continue
        side = rng.choice([0, 3, 4, 6])
        mask = square(rng.randrange(3), rng.randrange(3), side)[None]
        store.put(frame, encode_masks([obj], mask, [rng.random()]))
    found = [(i.frame_index, i.obj_id, i.reason, i.value) for i in store.review(0.5, 0.7)]
    assert found == reference_review(store, 0.5, 0.7) and found
    only = [(i.frame_index, i.obj_id, i.reason, i.value) for i in store.review(0.5, 0.7, 2)]
    assert only == [item for item in found if item[1] == 2]


def test_frames_written_together_keep_the_review_as_one_by_one(store):
    """put_frames: frames in any order, neighbours in the same batch or already stored."""
    rng = random.Random(11)
    for _ in range(40):
        batch = []
        for _ in range(rng.randrange(1, 8)):
            frame, obj = rng.randrange(20), rng.randrange(1, 3)
            side = rng.choice([0, 3, 4, 6])
            mask = square(rng.randrange(3), rng.randrange(3), side)[None]
            batch.append((frame, encode_masks([obj], mask, [rng.random()])))
        store.put_frames(batch)
    found = [(i.frame_index, i.obj_id, i.reason, i.value) for i in store.review(0.5, 0.7)]
    assert found == reference_review(store, 0.5, 0.7) and found


def test_sessions_share_the_table_but_not_their_masks(database):
    one, two = database.store("session-one"), database.store("session-two")
    try:
        one.put(0, encode_masks([1], square(0, 0, 3)[None], [0.9], ["propagation"], 4))
        two.put(0, encode_masks([1, 2], np.stack([square(1, 1, 2)] * 2), [0.8, 0.8]))
        assert [m.area for m in one.frame(0)] == [9] and len(two.frame(0)) == 2
        assert (one.last_propagation_id(), two.last_propagation_id()) == (4, 0)
        one.drop()
        assert list(one.frames()) == [] and len(two.frame(0)) == 2
    finally:
        one.drop()
        two.drop()


def test_migrations_are_versioned_and_applied_once(database, postgres_url):
    with psycopg.connect(postgres_url) as conn:
        applied = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert applied == [version for version, _ in migrations()] and applied[0] == 1
        assert migrate(conn) == []
    MaskDatabase(postgres_url, pool_size=1).close()  # another replica starting: nothing to do


def test_new_sessions_use_the_configured_backend_and_sqlite_sessions_keep_theirs(
    postgres_url, tmp_path
):
    stores = MaskStores("postgres", postgres_url, pool_size=1)
    try:
        old, new = tmp_path / "old", tmp_path / "new"
        old.mkdir()
        new.mkdir()
        SqliteMaskStore(old / "masks.sqlite").close()
        kept = stores.open("old-session", old)
        assert isinstance(kept, SqliteMaskStore)
        kept.close()
        store = stores.open("new-session", new)
        assert not isinstance(store, SqliteMaskStore) and store.session_id == "new-session"
        assert not (new / "masks.sqlite").exists()
        scratch = stores.open("scratch-session", new, scratch=True)
        assert isinstance(scratch, SqliteMaskStore)
        scratch.close()
    finally:
        stores.close()


def test_postgres_needs_a_database_url():
    from deployments.protocol import EngineSettings

    with pytest.raises(ValueError, match="SAM2_SERVE_DATABASE_URL"):
        EngineSettings(mask_store="postgres")
    settings = EngineSettings(mask_store="postgres", SAM2_SERVE_DATABASE_URL="postgresql://x")
    assert "database_url" not in settings.model_dump()


def test_a_stopped_database_is_unavailable_and_keeps_every_committed_mask():
    from tests.postgres_server import PostgresServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql")
    server = PostgresServer().start()
    try:
        database = MaskDatabase(server.url, pool_size=1, timeout_s=2)
        store = database.store("outage-session")
        mask = encode_masks([1], square(0, 0, 3)[None], [0.9])
        for frame in range(5):
            store.put(frame, mask)
        server.stop()
        with pytest.raises(StoreUnavailableError):
            store.put(5, mask)
        server.start()
        for _ in range(3):  # the pool replaces the connection the restart dropped
            try:
                frames = [f.frame_index for f in store.frames()]
                break
            except StoreUnavailableError:
                continue
        assert frames == [0, 1, 2, 3, 4]
        database.close()
    finally:
        server.close()


def test_a_bulk_load_over_stored_frames_keeps_the_review_current(store):
    """A put_frames large enough to COPY its new rows, over frames partly stored already."""
    rng = random.Random(5)
    objects = list(range(1, 11))

    def frame_of(seed: int) -> list:
        masks = np.stack([square(rng.randrange(4), rng.randrange(4), seed % 5 + 2)] * 10)
        return encode_masks(objects, masks, [rng.random() for _ in objects])

    for frame in range(0, 150, 3):
        store.put(frame, frame_of(frame))
    store.put_frames([(frame, frame_of(frame + 1)) for frame in range(50, 170)])
    found = [(i.frame_index, i.obj_id, i.reason, i.value) for i in store.review(0.5, 0.7)]
    assert found == reference_review(store, 0.5, 0.7) and found
    assert store.masked_frames() == dict.fromkeys(objects, 50 + 120 - 33)  # 33 in both

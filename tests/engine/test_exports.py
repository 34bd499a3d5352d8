"""Exports read back: COCO through pycocotools, DAVIS pixel values, MP4 through PyAV; the review
list, overlays, image segmentation and /track's ZIP."""

from __future__ import annotations

import io
import json
import zipfile

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from deployments.engine.mask_store import SqliteMaskStore, decode_mask, encode_masks
from deployments.protocol import CapacityError, Prompt, PropagationRequest

NUM_FRAMES = 24


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, predictor, video):
    """A session with two objects propagated through the whole clip."""
    from deployments.engine import SessionEngine
    from tests.conftest import engine_settings

    engine = SessionEngine(
        engine_settings(tmp_path_factory.mktemp("sessions")), predictor=predictor
    )
    session = engine.session(engine.create_session(video).session_id)
    session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[(40, 60)]))
    session.add_prompt(Prompt(frame_index=0, obj_id=2, box=(100, 10, 150, 50)))
    session.update_object(1, category="ball")
    list(session.propagate(PropagationRequest(direction="forward")))
    yield session
    engine.close()


def stored(session) -> dict[tuple[int, int], np.ndarray]:
    return {
        (f.frame_index, m.obj_id): decode_mask(m.rle)
        for f in session.masks.frames()
        for m in f.masks
    }


def test_coco_segmentations_decode_to_the_stored_masks(tracked, tmp_path):
    tracked.export("coco", tmp_path / "coco.json")
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert len(coco["images"]) == NUM_FRAMES
    assert {c["name"] for c in coco["categories"]} == {"ball", "object"}
    masks = stored(tracked)
    for annotation in coco["annotations"]:
        frame = annotation["image_id"] - 1
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
        assert (mask_utils.decode(rle).astype(bool) == masks[(frame, annotation["obj_id"])]).all()
    non_empty = sum(1 for m in masks.values() if m.any())
    assert len(coco["annotations"]) == non_empty


def test_coco_marks_the_prompted_keyframes(tracked, tmp_path):
    tracked.export("coco", tmp_path / "coco.json")
    annotations = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    keyframes = {(a["image_id"] - 1, a["obj_id"]) for a in annotations if a["keyframe"]}
    assert keyframes <= {(0, 1), (0, 2)} and keyframes  # both were prompted on frame 0 only
    for annotation in annotations:
        expected = ("prompt", None) if annotation["keyframe"] else ("propagation", 1)
        assert (annotation["source"], annotation["propagation_id"]) == expected


def test_png_zip_has_a_binary_png_per_frame_and_object(tracked, tmp_path):
    tracked.export("png_zip", tmp_path / "masks.zip")
    masks = stored(tracked)
    with zipfile.ZipFile(tmp_path / "masks.zip") as archive:
        names = sorted(archive.namelist())
        assert len(names) == NUM_FRAMES * 2
        png = cv2.imdecode(np.frombuffer(archive.read("00003_obj2.png"), np.uint8), 0)
    assert set(np.unique(png)) <= {0, 255}
    assert ((png > 0) == masks[(3, 2)]).all()


def test_davis_palette_pngs_hold_object_ids(tracked, tmp_path):
    tracked.export("davis", tmp_path / "davis.zip")
    masks = stored(tracked)
    with zipfile.ZipFile(tmp_path / "davis.zip") as archive:
        assert len(archive.namelist()) == NUM_FRAMES
        image = Image.open(io.BytesIO(archive.read("00005.png")))
    assert image.mode == "P"
    labels = np.array(image)
    expected = np.zeros_like(labels)
    for obj_id in (1, 2):
        expected[masks[(5, obj_id)]] = obj_id
    assert (labels == expected).all()


def test_mp4_decodes_with_the_sessions_frame_count_and_size(tracked, tmp_path):
    tracked.export("mp4", tmp_path / "overlay.mp4")
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        assert stream.codec_context.name == "h264"
    assert len(frames) == NUM_FRAMES
    assert (frames[0].width, frames[0].height) == (160, 120)


def test_one_object_export(tracked, tmp_path):
    tracked.export("png_zip", tmp_path / "one.zip", obj_id=1)
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        assert all(name.endswith("_obj1.png") for name in archive.namelist())


def test_overlay_is_a_jpeg_of_the_frame(tracked):
    jpeg = tracked.overlay_jpeg(4)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3)


def test_track_zip_has_one_png_per_frame(tracked, tmp_path):
    tracked.export_track_zip(tmp_path / "track.zip")
    with zipfile.ZipFile(tmp_path / "track.zip") as archive:
        assert sorted(archive.namelist()) == [f"{i:05d}.png" for i in range(NUM_FRAMES)]


def test_review_finds_low_scores_lost_objects_and_jumps_worst_first(tmp_path):
    store = SqliteMaskStore(tmp_path / "m.sqlite")
    square = np.zeros((1, 20, 20), bool)
    square[0, 2:10, 2:10] = True
    moved = np.zeros((1, 20, 20), bool)
    moved[0, 10:18, 10:18] = True
    store.put(0, encode_masks([1], square, [0.9]))
    store.put(1, encode_masks([1], square, [0.3]))
    store.put(2, encode_masks([1], moved, [0.9]))
    store.put(3, encode_masks([1], np.zeros((1, 20, 20), bool), [0.01]))
    items = store.review(score_threshold=0.5, iou_threshold=0.5)
    # IoU 0 (moved away) and lost tie at 0.0: earlier frame first; then the low score
    assert [(i.frame_index, i.reason) for i in items] == [
        (2, "area_jump"),
        (3, "lost"),
        (1, "low_score"),
    ]
    assert items[-1].value == pytest.approx(0.3)


def test_image_segmentation_is_a_one_frame_session_that_leaves_nothing(engine):
    image = np.full((90, 120, 3), 30, np.uint8)
    cv2.circle(image, (60, 45), 20, (200, 50, 50), -1)
    result = engine.segment_image(image, Prompt(frame_index=0, points=[(60, 45)]))
    assert result.masks[0].rle.size == (90, 120)
    assert engine.active_sessions == 0
    assert list(engine.settings.storage_root.glob("*")) == []


def test_image_segmentation_takes_a_slot(tmp_path, predictor, video):
    from deployments.engine import SessionEngine
    from tests.conftest import engine_settings

    engine = SessionEngine(engine_settings(tmp_path, max_sessions=1), predictor=predictor)
    try:
        engine.create_session(video)
        with pytest.raises(CapacityError):
            engine.segment_image(
                np.zeros((10, 10, 3), np.uint8), Prompt(frame_index=0, points=[(5, 5)])
            )
    finally:
        engine.close()

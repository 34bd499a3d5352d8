"""Exports of a session's masks, written to a file frame by frame (never built whole in memory):
COCO JSON with RLE segmentations, a ZIP of binary PNGs per frame and object, a DAVIS-style ZIP of
palette PNGs whose pixel values are object ids, and an H.264 MP4 of the frames with the masks
drawn (PyAV: OpenCV here cannot encode H.264). Also the overlay drawing."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from deployments.engine.frames import FrameSource
from deployments.engine.mask_store import MaskStore, decode_mask
from deployments.protocol.types import (
    ExportFormat,
    FrameMask,
    ObjectInfo,
    VideoInfo,
)


def palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette: 256 RGB colours, index 0 black."""
    colours = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    return colours


PALETTE = palette()


@dataclass(frozen=True)
class ExportSource:
    """What an export reads: the session's video, frames, masks and objects."""

    video: VideoInfo
    frames: FrameSource
    masks: MaskStore
    objects: list[ObjectInfo]
    overlay_alpha: float  # the MP4's masks: the overlay_alpha setting


def write_export(source: ExportSource, fmt: ExportFormat, target: Path, obj_id: int | None) -> None:
    """Write the export of ``fmt`` (optionally one object) to ``target``."""
    writers = {"coco": _coco, "png_zip": _png_zip, "davis": _davis, "mp4": _mp4}
    target.parent.mkdir(parents=True, exist_ok=True)
    writers[fmt](source, target, obj_id)


def write_track_zip(source: ExportSource, target: Path) -> None:
    """``/track``'s answer: one binary PNG per frame (``00000.png``...), every object's mask
    together, black where there is none."""
    video = source.video
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for index, masks in _frames_with_masks(source, None):
            binary = (label_image(masks, video.height, video.width) > 0).astype(np.uint8) * 255
            archive.writestr(f"{index:05d}.png", _png(binary))


def render_overlay(rgb: np.ndarray, masks: Iterable[FrameMask], alpha: float) -> np.ndarray:
    """The frame with each object's mask tinted in its palette colour at ``alpha`` (the
    ``overlay_alpha`` setting) and outlined."""
    out = rgb.copy()
    for mask in masks:
        if mask.area == 0:
            continue
        binary = decode_mask(mask.rle)
        colour = PALETTE[mask.obj_id].astype(np.float32)
        out[binary] = (out[binary] * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(
            binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in PALETTE[mask.obj_id]), 2)
    return out


def _frames_with_masks(source: ExportSource, obj_id: int | None) -> Iterator[tuple[int, list]]:
    """(frame index, masks) for every frame of the video, masks empty where none is stored."""
    stored = source.masks.frames(obj_id=obj_id)
    pending = next(stored, None)
    for index in range(source.video.num_frames):
        if pending is not None and pending.frame_index == index:
            yield index, pending.masks
            pending = next(stored, None)
        else:
            yield index, []


def _coco(source: ExportSource, target: Path, obj_id: int | None) -> None:
    """COCO JSON: an image per frame, an annotation per non-empty mask, categories from the
    objects' categories (``object`` when unset). Written piece by piece.

    Beyond COCO, each annotation says whether the object was prompted on that frame
    (``keyframe``: the frames an annotator placed, which a training set or a reviewer may treat
    apart), and where the mask came from (``source``, ``propagation_id``) when recorded."""
    names = sorted({o.category or "object" for o in source.objects})
    keyframes = {o.obj_id: frozenset(o.prompt_frames) for o in source.objects}
    category_of = {o.obj_id: names.index(o.category or "object") + 1 for o in source.objects}
    video = source.video
    with target.open("w") as out:
        out.write('{"info": {"description": "sam2-serve export"}, "images": [')
        for index in range(video.num_frames):
            image = {
                "id": index + 1,
                "file_name": f"{index:05d}.jpg",
                "frame_index": index,
                "width": video.width,
                "height": video.height,
            }
            out.write(("," if index else "") + json.dumps(image))
        out.write('], "annotations": [')
        count = 0
        for frame in source.masks.frames(obj_id=obj_id):
            for mask in frame.masks:
                if mask.area == 0:
                    continue
                count += 1
                annotation = {
                    "id": count,
                    "image_id": frame.frame_index + 1,
                    "category_id": category_of.get(mask.obj_id, 1),
                    "obj_id": mask.obj_id,
                    "segmentation": mask.rle.model_dump(),
                    "area": mask.area,
                    "bbox": list(mask.bbox),
                    "iscrowd": 0,
                    "score": mask.score,
                    "keyframe": frame.frame_index in keyframes.get(mask.obj_id, ()),
                    "source": mask.source,
                    "propagation_id": mask.propagation_id,
                }
                out.write(("," if count > 1 else "") + json.dumps(annotation))
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
        out.write(f'], "categories": {json.dumps(categories)}}}')


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def _png_zip(source: ExportSource, target: Path, obj_id: int | None) -> None:
    """One binary (0/255) PNG per frame and object: ``<frame>_obj<id>.png``."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for frame in source.masks.frames(obj_id=obj_id):
            for mask in frame.masks:
                binary = decode_mask(mask.rle).astype(np.uint8) * 255
                archive.writestr(f"{frame.frame_index:05d}_obj{mask.obj_id}.png", _png(binary))


def label_image(masks: Iterable[FrameMask], height: int, width: int) -> np.ndarray:
    """One uint8 image whose pixel values are object ids (later objects on top)."""
    labels = np.zeros((height, width), np.uint8)
    for mask in masks:
        labels[decode_mask(mask.rle)] = mask.obj_id
    return labels


def _davis(source: ExportSource, target: Path, obj_id: int | None) -> None:
    """One palette PNG per frame (``<frame>.png``) whose pixel values are object ids."""
    video = source.video
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for index, masks in _frames_with_masks(source, obj_id):
            image = Image.fromarray(label_image(masks, video.height, video.width))
            image.putpalette(PALETTE.tobytes())  # an L image becomes P with this palette
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(f"{index:05d}.png", buffer.getvalue())


def _mp4(source: ExportSource, target: Path, obj_id: int | None) -> None:
    """H.264 (yuv420p, so browsers play it) at the session's frame rate and size; odd sizes get
    one black row/column of padding, as yuv420p needs even sizes."""
    video = source.video
    width, height = video.width + video.width % 2, video.height + video.height % 2
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=_rate(video.fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, masks in _frames_with_masks(source, obj_id):
            rgb = render_overlay(source.frames.read_rgb(index), masks, source.overlay_alpha)
            if (width, height) != (video.width, video.height):
                rgb = cv2.copyMakeBorder(
                    rgb, 0, height - video.height, 0, width - video.width, cv2.BORDER_CONSTANT
                )
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """An RGB frame as JPEG bytes (a frame preview, an overlay)."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()

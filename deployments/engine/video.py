"""The session's video: where its source file is, the index of its frames and the session's
selection of them, kept in the session directory so another replica reopens it as it was.

Creating a session indexes the source (a demux, no decoding: seconds for an hour of video) and
writes ``video.json`` and ``index.npz``; frames are decoded on demand later (``FrameSource``).
An upload is moved into the session directory (it is on the same shared storage), so deleting
the session removes it. A server-side video is referenced in place, read-only: its size and
mtime are recorded, and a session whose file changed is refused (``SourceChangedError``). A
video object (``s3://``) is referenced the same way, by URL, and read with range requests.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel

from deployments.engine.object_video import ObjectStore, ObjectVideo
from deployments.engine.video_index import VideoIndex, VideoSource, check_source
from deployments.engine.video_reader import VideoReader
from deployments.engine.video_selection import VideoSelection, select_frames
from deployments.protocol.errors import BadImageError
from deployments.protocol.locations import ObjectLocation
from deployments.protocol.types import VideoInfo, VideoOptions

VIDEO_FILE = "video.json"
INDEX_FILE = "index.npz"
SOURCE_STEM = "source"


class VideoRecord(BaseModel):
    """``video.json``: what reopening the session's video needs.

    ``source`` is a file name inside the session directory (a moved upload), an absolute path
    (a server-side video under VIDEO_ROOT, mounted at the same path on every replica) or an
    ``s3://`` URL (an object in an allow-listed bucket).
    """

    info: VideoInfo
    options: VideoOptions
    source: str
    source_size: int
    source_mtime_ns: int


@dataclass(frozen=True)
class SessionVideo:
    """A session's source file or object, its index and the session's frames in it."""

    source: VideoSource
    index: VideoIndex
    selection: VideoSelection

    @property
    def info(self) -> VideoInfo:
        return self.selection.info

    def reader(self, buffer_bytes: int, size: tuple[int, int] | None = None) -> VideoReader:
        """A reader of the session's frames, at frame size or at ``size`` (w, h)."""
        return VideoReader(
            self.source, self.index, self.selection, buffer_bytes=buffer_bytes, size=size
        )


def store_video(
    directory: Path,
    video: VideoSource,
    options: VideoOptions,
    *,
    move: bool,
    max_frames: int,
    max_seconds: float = math.inf,
) -> SessionVideo:
    """Index ``video`` for a new session in ``directory`` and write its record.

    With ``move`` the file is moved into ``directory`` (it must be on the same filesystem);
    otherwise it is referenced in place (an object always is). Raises BadVideoError (not a
    video, no frames), InvalidRequestError (a cut that selects nothing) and VideoTooLargeError;
    for an object also ForbiddenPathError, NotFoundError and ObjectStoreUnavailableError.
    """
    source = video if isinstance(video, ObjectVideo) else video.resolve()
    if move and isinstance(video, Path):
        source = directory / (SOURCE_STEM + video.suffix.lower())
        os.replace(video, source)
    index = VideoIndex.build(source)
    selection = select_frames(index, options, max_frames=max_frames, max_seconds=max_seconds)
    index.save(directory / INDEX_FILE)
    record = VideoRecord(
        info=selection.info,
        options=options,
        source=source.name if move else str(source),  # an object's str is its URL
        source_size=index.source_size,
        source_mtime_ns=index.source_mtime_ns,
    )
    (directory / VIDEO_FILE).write_text(record.model_dump_json(indent=1))
    return SessionVideo(source, index, selection)


def load_video(directory: Path, objects: ObjectStore) -> SessionVideo:
    """The video of the session stored in ``directory``, as it was created; ``objects`` reads
    an ``s3://`` source.

    Raises FileNotFoundError when the session's record is gone, SourceChangedError when its
    source file or object is gone or changed. An index of another version is built again.
    """
    record = VideoRecord.model_validate_json((directory / VIDEO_FILE).read_text())
    source: VideoSource
    if ObjectLocation.is_url(record.source):
        source = ObjectVideo(objects, ObjectLocation.parse(record.source))
    else:
        source = directory / record.source  # an absolute path stays as it is
    check_source(source, record.source_size, record.source_mtime_ns)
    try:
        index = VideoIndex.load(directory / INDEX_FILE)
    except (FileNotFoundError, ValueError):
        index = VideoIndex.build(source)
        index.save(directory / INDEX_FILE)
    selection = select_frames(index, record.options, max_frames=record.info.num_frames)
    return SessionVideo(source, index, selection)


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes (JPEG, PNG, ...) as RGB; BadImageError when they are not an image."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadImageError("the upload is not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

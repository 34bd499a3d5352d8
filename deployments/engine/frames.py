"""``FrameSource``: the session's frames for SAM 2 and for people, decoded on demand.

SAM 2's ``init_state(video_path=...)`` holds every frame as a float32 tensor (12 MiB each at
1024, sam2#196). This source stands in for ``inference_state["images"]``: frame k becomes a
``[3, S, S]`` tensor when SAM 2 indexes it, and the next frames of a propagation are converted
on a prefetch thread while the model computes the current one.

Two readers, so that neither breaks the other's access pattern: the model's reader walks the
video as SAM 2 does (read-ahead forward, GOP segments backward) and decodes straight to S x S
(swscale converts and resizes in one pass); the frame-space reader serves overlays, exports
and ``GET .../frames/{k}`` at the session's frame size, so a scrub or an export during a
propagation does not make the model's reader seek.

Every model-side read runs on the one prefetch thread, in the order asked for, so the model's
reader sees SAM 2's walk as SAM 2 makes it: a frame asked for never overtakes the prefetches
queued before it. The model's reader reads the session's source for the session's whole life,
so the same clicks give the same masks whenever they come (docs/architecture.md, "The model
always reads the source").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np
import torch

from deployments.engine.video_reader import FrameReader

# SAM 2's image normalisation (sam2.utils.misc.load_video_frames), as one multiply and one add
# per channel: (x / 255 - mean) / std = x * scale + offset.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SCALE = 1 / (255 * _STD)
_OFFSET = -_MEAN / _STD
# Converted frames waiting for SAM 2: a propagation asks for the next two.
_MAX_PENDING = 4


def to_model_input(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """An RGB uint8 frame as SAM 2's normalised ``[3, S, S]`` float32 input; resized (bicubic,
    as SAM 2's loader) unless it comes at S x S already."""
    if rgb.shape[:2] != (image_size, image_size):
        rgb = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    out = np.empty((3, image_size, image_size), np.float32)
    for channel in range(3):
        out[channel] = rgb[:, :, channel]
        out[channel] *= _SCALE[channel]
        out[channel] += _OFFSET[channel]
    return torch.from_numpy(out)


class FrameSource:
    """Sequence of ``[3, S, S]`` float32 tensors (S = the model's image size) over a model-side
    reader, plus frame-space RGB frames over another. Thread-safe; owns both readers."""

    def __init__(self, model_frames: FrameReader, frames: FrameReader, image_size: int) -> None:
        self.image_size = image_size
        # Its frames are read on the prefetch thread only (see the module docstring).
        self._model_frames = model_frames
        self._frames = frames
        self._pending: OrderedDict[int, Future[torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-prefetch")

    def __len__(self) -> int:
        return self._model_frames.num_frames

    def __getitem__(self, index: int) -> torch.Tensor:
        """Frame ``index`` as the model's input; a prefetched one is handed over once. Raises
        RuntimeError once closed."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        with self._lock:
            pending = self._pending.pop(index, None)
            if pending is None:
                pending = self._prefetcher.submit(self._convert, index)
        return pending.result()

    def prefetch(self, index: int) -> None:
        """Convert ``index`` in the background so the model's next step finds it ready.

        Conversions run one at a time in the order asked for, so the model's reader sees the
        propagation's walk in order (and reads ahead of it). Ignored outside the video.
        """
        with self._lock:
            if self._closed or not 0 <= index < len(self) or index in self._pending:
                return
            self._pending[index] = self._prefetcher.submit(self._convert, index)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)[1].cancel()

    def read_rgb(self, index: int) -> np.ndarray:
        """The frame at the session's frame size as a read-only RGB uint8 array."""
        return self._frames.frame(index)

    def buffer_nbytes(self) -> int:
        """Bytes of decoded frames both readers hold now, plus converted frames waiting."""
        with self._lock:
            ready = [f for f in self._pending.values() if _succeeded(f)]
        waiting = sum(f.result().nbytes for f in ready)
        readers = {id(r): r for r in (self._model_frames, self._frames)}.values()
        return waiting + sum(r.buffer_nbytes() for r in readers)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._prefetcher.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._pending.clear()
        self._model_frames.close()
        if self._frames is not self._model_frames:
            self._frames.close()

    def _convert(self, index: int) -> torch.Tensor:
        return to_model_input(self._model_frames.frame(index), self.image_size)


def _succeeded(future: Future[torch.Tensor]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None

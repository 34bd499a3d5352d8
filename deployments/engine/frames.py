"""``FrameSource``: the session's JPEG frames as SAM 2 input tensors, decoded on demand.

SAM 2's ``init_state(video_path=...)`` holds every frame as a float32 tensor (12 MiB each at
1024, sam2#196). This source stands in for ``inference_state["images"]``: it decodes, resizes
and normalises a frame when SAM 2 indexes it and keeps only a small LRU, so host memory for
frames is bounded by the cache size, not by the video's length.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from deployments.engine.video import frame_path

# SAM 2's image normalisation (sam2.utils.misc.load_video_frames).
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class FrameSource:
    """Sequence of ``[3, S, S]`` float32 tensors (S = the model's image size), lazily loaded."""

    def __init__(self, frames_dir: Path, num_frames: int, image_size: int, cache_size: int):
        self.frames_dir = frames_dir
        self.num_frames = num_frames
        self.image_size = image_size
        self.cache_size = cache_size
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._prefetching: dict[int, Future[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-prefetch")

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.num_frames:
            raise IndexError(index)
        with self._lock:
            tensor = self._cache.get(index)
            if tensor is not None:
                self._cache.move_to_end(index)
                return tensor
            pending = self._prefetching.get(index)
        if pending is not None:
            return pending.result()  # being decoded already: wait rather than decode twice
        return self._load_and_remember(index)

    def prefetch(self, index: int) -> None:
        """Decode ``index`` in the background so the next model step finds it cached."""
        with self._lock:
            if not 0 <= index < self.num_frames or index in self._cache:
                return
            if index not in self._prefetching:
                self._prefetching[index] = self._prefetcher.submit(self._prefetch, index)

    def _prefetch(self, index: int) -> torch.Tensor:
        try:
            return self._load_and_remember(index)
        finally:
            with self._lock:
                self._prefetching.pop(index, None)

    def read_rgb(self, index: int) -> np.ndarray:
        """The processed frame as an RGB uint8 array (frame space)."""
        bgr = cv2.imread(str(frame_path(self.frames_dir, index)), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(frame_path(self.frames_dir, index))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def cache_nbytes(self) -> int:
        with self._lock:
            return sum(t.nbytes for t in self._cache.values())

    def close(self) -> None:
        self._prefetcher.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._cache.clear()

    def _load_and_remember(self, index: int) -> torch.Tensor:
        tensor = self._load(index)
        self._remember(index, tensor)
        return tensor

    def _load(self, index: int) -> torch.Tensor:
        rgb = self.read_rgb(index)
        size = (self.image_size, self.image_size)
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        normalised = (resized.astype(np.float32) / 255.0 - _MEAN) / _STD
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))

    def _remember(self, index: int, tensor: torch.Tensor) -> None:
        with self._lock:
            self._cache[index] = tensor
            self._cache.move_to_end(index)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

"""``ModelExecutor``: the one thread that runs model work, shared fairly by sessions.

Every call into SAM 2 goes through here. Work is queued per session and served round-robin,
one item at a time; a propagation submits one frame per item, so a click on session B waits
for at most the frame that session A is computing, not A's whole propagation (Meta's demo
holds one lock through a whole propagation). One thread also gives one place for the
thread-local autocast and inference-mode contexts (``precision.model_context``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import torch

from deployments.engine.precision import model_context

T = TypeVar("T")
_Work = tuple[Callable[[], object], Future]


class ModelExecutor:
    """Runs submitted callables on one worker thread, round-robin across owners (sessions)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, name: str = "sam2-model") -> None:
        self.device = device
        self.dtype = dtype
        self._queues: OrderedDict[str, deque[_Work]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, owner: str, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` behind ``owner``'s earlier work; its result or error lands in the future."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("model executor is closed")
            self._queues.setdefault(owner, deque()).append((fn, future))
            self._cond.notify()
        return future

    def run(self, owner: str, fn: Callable[[], T]) -> T:
        """Submit and wait."""
        return self.submit(owner, fn).result()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def queued(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        """Stop after the item in progress; queued work fails with RuntimeError."""
        with self._cond:
            self._closed = True
            dropped = [work for queue in self._queues.values() for work in queue]
            self._queues.clear()
            self._cond.notify()
        for _, future in dropped:
            future.set_exception(RuntimeError("model executor closed"))
        self._thread.join()

    def _next(self) -> _Work | None:
        """The oldest item of the owner served longest ago; None once closed."""
        with self._cond:
            while not self._closed and not self._queues:
                self._cond.wait()
            if self._closed:
                return None
            owner, queue = next(iter(self._queues.items()))
            work = queue.popleft()
            del self._queues[owner]
            if queue:
                self._queues[owner] = queue  # back of the line
            return work

    def _serve(self) -> None:
        with model_context(self.device, self.dtype):
            while (work := self._next()) is not None:
                fn, future = work
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

"""``ModelExecutor``: the one thread that runs model work, shared fairly by sessions.

Every call into SAM 2 goes through here. Work is queued per session and served round-robin,
one item at a time; a propagation submits one frame per item, so a click on session B waits
for at most the frame that session A is computing, not A's whole propagation (Meta's demo
holds one lock through a whole propagation). One thread also gives one place for the
thread-local autocast and inference-mode contexts (``precision.model_context``).

With an ``EncoderBatcher``, an item that says which frame it will encode (a propagation step)
first has the batcher encode that frame together with the frames the items queued next by
other sessions will encode: one batch instead of one image-encoder run per session, while the
order of items, and so fairness, stays as it is (the item that forms the batch takes longer,
the items it encoded for take less).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

import torch

from deployments.engine.features import EncoderBatcher, UpcomingFrame
from deployments.engine.precision import model_context

T = TypeVar("T")


@dataclass(frozen=True)
class _Work:
    fn: Callable[[], object]
    future: Future
    upcoming: UpcomingFrame | None


class ModelExecutor:
    """Runs submitted callables on one worker thread, round-robin across owners (sessions)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, name: str = "sam2-model") -> None:
        self.device = device
        self.dtype = dtype
        self._queues: OrderedDict[str, deque[_Work]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        # Set once the model is loaded (it is built on this executor's thread); None: every
        # item encodes its own frames.
        self.batcher: EncoderBatcher | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, owner: str, fn: Callable[[], T], upcoming: UpcomingFrame | None = None
    ) -> Future[T]:
        """Queue ``fn`` behind ``owner``'s earlier work; its result or error lands in the future.
        ``upcoming`` says which frame ``fn`` will run the image encoder on, so a batch can
        include it."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("model executor is closed")
            self._queues.setdefault(owner, deque()).append(_Work(fn, future, upcoming))
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
        for work in dropped:
            work.future.set_exception(RuntimeError("model executor closed"))
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

    def _upcoming_batch(self, work: _Work) -> list[UpcomingFrame]:
        """The frames ``work`` and the next item of every other owner, in the order they will
        be served, will encode; nothing when ``work`` encodes nothing or batching is off."""
        if self.batcher is None or work.upcoming is None:
            return []
        with self._cond:
            heads = [queue[0].upcoming for queue in self._queues.values()]
        return [work.upcoming, *(upcoming for upcoming in heads if upcoming is not None)]

    def _serve(self) -> None:
        with model_context(self.device, self.dtype):
            while self._serve_one():
                pass

    def _serve_one(self) -> bool:
        """Run the next item; False once closed. The item is a local of this call, so an idle
        model thread holds nothing of the last one it ran (its callable and what that
        references: a deleted session's cache, say)."""
        work = self._next()
        if work is None:
            return False
        if not work.future.set_running_or_notify_cancel():
            return True
        try:
            if self.batcher is not None and (upcoming := self._upcoming_batch(work)):
                self.batcher.run(upcoming)
            work.future.set_result(work.fn())
        except BaseException as exc:
            work.future.set_exception(exc)
        return True

"""Files in and out without holding them in memory: uploads read from disk chunk by chunk as
httpx sends them, downloads written chunk by chunk to a partial file that takes its final name
only once complete. Both report progress."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

# Called with (bytes or frames done, total or None) as work advances.
Progress = Callable[[int, int | None], None]


class ProgressReader:
    """A binary file that httpx's multipart encoder reads in 64 KiB chunks; each read reports
    the file position. httpx seeks to the start before each attempt, so a retried upload
    reports from zero again. ``fileno`` lets httpx size the body without reading it."""

    def __init__(self, file: IO[bytes], progress: Progress | None) -> None:
        self._file = file
        self._progress = progress
        self.total = os.fstat(file.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if self._progress is not None:
            self._progress(self._file.tell(), self.total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


class Download:
    """A response body written to ``target``: into ``<target>.part`` while it arrives, renamed
    when complete, removed when the transfer fails (no half file under the final name)."""

    def __init__(self, target: Path, total: int | None, progress: Progress | None) -> None:
        self.target = Path(target)
        self.partial = self.target.with_name(self.target.name + ".part")
        self.total = total
        self.done = 0
        self._progress = progress
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Download:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.partial.open("wb")
        return self

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "write inside `with Download(...)`"
        self._file.write(chunk)
        self.done += len(chunk)
        if self._progress is not None:
            self._progress(self.done, self.total)

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._file is not None
        self._file.close()
        if error_type is None:
            os.replace(self.partial, self.target)
        else:
            self.partial.unlink(missing_ok=True)


def content_length(headers: httpx.Headers) -> int | None:
    """The body's declared size, for a progress total; None when streamed without one."""
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None

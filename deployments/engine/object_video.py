"""Videos in S3-compatible object storage (``s3://bucket/key``), read with range requests.

PyAV reads through ``RangeFile``, a seekable read-only file over GetObject Range requests of
aligned blocks, kept in one least-recently-used cache per engine (``s3_cache_mb``): a session
reads the header and the GOPs it decodes, never the whole object first, and its readers (the
index, the model's frames, the frame-space frames) fetch a block once between them. The client
is obstore (the Rust ``object_store`` crate behind a small wheel with no Python dependencies):
plain range GETs, signed, with retries.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import obstore
from obstore.store import S3Store

from deployments.protocol.errors import (
    ForbiddenPathError,
    NotFoundError,
    ObjectStoreUnavailableError,
)
from deployments.protocol.locations import ObjectLocation
from deployments.protocol.settings import EngineSettings


@dataclass
class ReadStats:
    """What has been fetched from one object: bytes and range requests (benchmarks read it)."""

    bytes_read: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_read += nbytes
            self.requests += 1


# A failed request is retried (connection errors, 5xx, throttling) for this long at most, with
# backoff, before the read fails with 503: a reader waits through a blip, not an outage.
_RETRY = {"max_retries": 4, "retry_timeout": timedelta(seconds=5)}
_CLIENT = {"allow_http": True, "connect_timeout": timedelta(seconds=5)}

# A cached block: the object, its (size, last-modified) version, the block's number.
_BlockKey = tuple[ObjectLocation, tuple[int, int], int]


class ObjectStore:
    """The configured endpoint and credentials, the allow-listed buckets, the block cache and
    read statistics per object (summed over every reader of it). Thread-safe."""

    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._stores: dict[str, S3Store] = {}
        self._stats: dict[ObjectLocation, ReadStats] = {}
        self._blocks: OrderedDict[_BlockKey, bytes] = OrderedDict()
        self._block_size = settings.s3_block_kb * 1024
        self._capacity = settings.s3_cache_mb * 2**20 // self._block_size
        self._lock = threading.Lock()

    def check_allowed(self, location: ObjectLocation) -> None:
        """ForbiddenPathError unless the bucket is allow-listed (``s3_buckets``)."""
        if location.bucket not in self._settings.s3_buckets:
            raise ForbiddenPathError(
                f"bucket {location.bucket!r} is not one this server reads (s3_buckets)"
            )

    def stat(self, location: ObjectLocation) -> tuple[int, int]:
        """(size, last-modified in ns) of the object. Raises ForbiddenPathError for a bucket
        not allowed, NotFoundError for a missing object, ObjectStoreUnavailableError when the store
        does not answer."""
        self.check_allowed(location)
        try:
            meta = obstore.head(self._store(location.bucket), location.key)
        except FileNotFoundError:
            raise NotFoundError(f"no object at {location.url}") from None
        except Exception as exc:  # obstore's errors: connection, auth, throttling
            raise _unavailable(location) from exc
        modified = meta["last_modified"]
        return meta["size"], int(modified.timestamp()) * 10**9 + modified.microsecond * 1000

    def open(self, location: ObjectLocation, version: tuple[int, int]) -> RangeFile:
        """A seekable file over the object at ``version`` ((size, last-modified), from
        ``stat``): blocks of another version are never served from the cache."""
        self.check_allowed(location)
        size = version[0]

        def block(number: int) -> bytes:
            key = (location, version, number)
            with self._lock:
                if key in self._blocks:
                    self._blocks.move_to_end(key)
                    return self._blocks[key]
            start = number * self._block_size
            data = self._get_range(location, start, min(start + self._block_size, size))
            with self._lock:
                self._blocks[key] = data
                while len(self._blocks) > self._capacity:
                    self._blocks.popitem(last=False)
            return data

        return RangeFile(block, size, self._block_size)

    def stats(self, location: ObjectLocation) -> ReadStats:
        with self._lock:
            return self._stats.setdefault(location, ReadStats())

    def _get_range(self, location: ObjectLocation, start: int, end: int) -> bytes:
        try:
            data = bytes(
                obstore.get_range(self._store(location.bucket), location.key, start=start, end=end)
            )
        except FileNotFoundError:
            raise NotFoundError(f"the object {location.url} was removed") from None
        except Exception as exc:
            raise _unavailable(location) from exc
        self.stats(location).add(len(data))
        return data

    def _store(self, bucket: str) -> S3Store:
        with self._lock:
            if bucket not in self._stores:
                s = self._settings
                secret = s.s3_secret_access_key
                key_id = s.s3_access_key_id
                self._stores[bucket] = S3Store(
                    bucket,
                    endpoint=s.s3_endpoint_url,
                    region=s.s3_region,
                    access_key_id=key_id.get_secret_value() if key_id else None,
                    secret_access_key=secret.get_secret_value() if secret else None,
                    virtual_hosted_style_request=False,
                    client_options=_CLIENT,
                    retry_config=_RETRY,
                )
            return self._stores[bucket]


def _unavailable(location: ObjectLocation) -> ObjectStoreUnavailableError:
    """503 with a short message; the client's error (pages of debug text) stays chained, for
    the logs."""
    return ObjectStoreUnavailableError(f"the object store did not answer for {location.url}")


class RangeFile(io.RawIOBase):
    """A read-only, seekable file of ``size`` bytes made of aligned blocks of ``block_size``
    (the last one shorter), block ``n`` given by ``block(n)``. It keeps the block it reads in, so
    PyAV's small sequential reads fetch each block once even without a cache. Used by one thread
    at a time, as PyAV's container is."""

    def __init__(self, block: Callable[[int], bytes], size: int, block_size: int) -> None:
        super().__init__()
        self._block_at = block
        self._size = size
        self._block = block_size
        self._current: tuple[int, bytes] | None = None
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self._size:
            number, within = divmod(self._position, self._block)
            block = self._get(number)
            chunk = block[within : within + len(view) - done]
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._position += len(chunk)
        return done

    def _get(self, number: int) -> bytes:
        if self._current is None or self._current[0] != number:
            self._current = (number, self._block_at(number))
        return self._current[1]


@dataclass(frozen=True)
class ObjectVideo:
    """A video object as a session's source: what ``VideoIndex`` and the decoder open."""

    store: ObjectStore
    location: ObjectLocation

    @property
    def name(self) -> str:
        return self.location.name

    def stat(self) -> tuple[int, int]:
        """(size, last-modified in ns); NotFoundError when the object is gone."""
        return self.store.stat(self.location)

    def open(self) -> RangeFile:
        return self.store.open(self.location, self.stat())

    def __str__(self) -> str:
        return self.location.url

"""``RedisSessionStore``: sessions in Redis (production; with AOF they survive a Redis restart).

Layout under a key prefix: ``session:<id>`` a hash of the record's fields (JSON values),
``session:<id>:objects`` a hash obj_id -> JSON, ``session:<id>:log`` a list of JSON entries,
``sessions`` a sorted set of ids by creation time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from session_store.base import SessionStore, StoreError, check_unclaimed
from session_store.records import Lease, LogEntry, ObjectRecord, SessionRecord

# HSET only when the hash exists, so an update never resurrects a deleted session.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


# Compare-and-set of owner and lease (JSON values): both change only if both are as expected. A
# record written before leases existed has no lease field: that reads as none.
_CLAIM = """
local current = redis.call('HMGET', KEYS[1], 'session_id', 'replica', 'lease')
if not current[1] then return 0 end
if (current[2] or 'null') ~= ARGV[1] or (current[3] or 'null') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'replica', ARGV[3], 'lease', ARGV[4])
return 1
"""

# RPUSH only when the session exists, so an append never resurrects a deleted session's log.
_APPEND_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


P = ParamSpec("P")
T = TypeVar("T")


def _failures_as_store_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A store call whose Redis failure (after the client's retries) raises ``StoreError``."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError(type(exc).__name__, str(exc)) from exc

    return call


class RedisSessionStore(SessionStore):
    def __init__(
        self,
        url: str,
        prefix: str = "sam2serve:",
        *,
        retries: int,
        retry_base_s: float,
        retry_cap_s: float,
    ) -> None:
        """``retries`` and the backoff between them: the ``redis_retr*`` settings."""
        # A restarted Redis drops every connection: retry on a fresh one instead of failing.
        self._redis = redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=retry_cap_s, base=retry_base_s), retries=retries),
            retry_on_error=[ConnectionError, TimeoutError],
        )
        self._prefix = prefix
        self._update = self._redis.register_script(_UPDATE_IF_EXISTS)
        self._claim = self._redis.register_script(_CLAIM)
        self._append = self._redis.register_script(_APPEND_IF_EXISTS)

    def _key(self, session_id: str, part: str = "") -> str:
        return f"{self._prefix}session:{session_id}{part}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}sessions"

    @_failures_as_store_errors
    async def create(self, record: SessionRecord) -> bool:
        key = self._key(record.session_id)
        fields = _dump(record.model_dump(mode="json"))
        created = await self._redis.hsetnx(key, "session_id", fields.pop("session_id"))
        if not created:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.zadd(self._index, {record.session_id: record.created_at.timestamp()})
            await pipe.execute()
        return True

    @_failures_as_store_errors
    async def get(self, session_id: str) -> SessionRecord | None:
        fields = await self._redis.hgetall(self._key(session_id))
        return _load(fields) if len(fields) > 1 else None

    @_failures_as_store_errors
    async def list(self) -> list[SessionRecord]:
        ids = await self._redis.zrange(self._index, 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(self._key(session_id))
            rows = await pipe.execute()
        return [_load(fields) for fields in rows if len(fields) > 1]

    @_failures_as_store_errors
    async def update(self, session_id: str, **changes: Any) -> SessionRecord | None:
        check_unclaimed(changes)
        current = await self.get(session_id)
        if current is None:
            return None
        updated = current.model_validate(current.model_dump() | changes)
        changed = {k: v for k, v in updated.model_dump(mode="json").items() if k in changes}
        args = [item for pair in _dump(changed).items() for item in pair]
        if args and not await self._update(keys=[self._key(session_id)], args=args):
            return None
        return updated

    @_failures_as_store_errors
    async def claim(
        self,
        session_id: str,
        expected: tuple[str | None, Lease | None],
        replica: str | None,
        lease: Lease | None,
    ) -> bool:
        args = [_field(value) for value in (*expected, replica, lease)]
        return bool(await self._claim(keys=[self._key(session_id)], args=args))

    @_failures_as_store_errors
    async def delete(self, session_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(session_id))
            pipe.delete(self._key(session_id, ":objects"), self._key(session_id, ":log"))
            pipe.zrem(self._index, session_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    @_failures_as_store_errors
    async def put_object(self, session_id: str, obj: ObjectRecord) -> None:
        if await self._redis.exists(self._key(session_id)):
            await self._redis.hset(
                self._key(session_id, ":objects"), str(obj.obj_id), obj.model_dump_json()
            )

    @_failures_as_store_errors
    async def delete_object(self, session_id: str, obj_id: int) -> None:
        await self._redis.hdel(self._key(session_id, ":objects"), str(obj_id))

    @_failures_as_store_errors
    async def objects(self, session_id: str) -> list[ObjectRecord]:
        rows = await self._redis.hgetall(self._key(session_id, ":objects"))
        return [ObjectRecord.model_validate_json(rows[k]) for k in sorted(rows, key=int)]

    @_failures_as_store_errors
    async def append_log(self, session_id: str, entry: LogEntry) -> None:
        keys = [self._key(session_id), self._key(session_id, ":log")]
        await self._append(keys=keys, args=[json.dumps(entry)])

    @_failures_as_store_errors
    async def log(self, session_id: str) -> list[LogEntry]:
        return [
            json.loads(e) for e in await self._redis.lrange(self._key(session_id, ":log"), 0, -1)
        ]

    @_failures_as_store_errors
    async def clear(self, session_id: str) -> None:
        await self._redis.delete(self._key(session_id, ":objects"), self._key(session_id, ":log"))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except redis.RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def _dump(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in fields.items()}


def _field(value: str | Lease | None) -> str:
    """An owner or lease as the record's hash holds it (as ``_dump`` writes it)."""
    return json.dumps(value.model_dump(mode="json") if isinstance(value, Lease) else value)


def _load(fields: dict[str, str]) -> SessionRecord:
    return SessionRecord.model_validate({k: json.loads(v) for k, v in fields.items()})

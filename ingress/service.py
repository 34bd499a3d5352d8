"""``SessionService``: what the routes do, between the session store and the SAM 2 replicas.

It reads a session's owner from the store and sends the request to that replica (the
``SessionRouter`` keeps it there), rebuilds a session whose owner is gone, holds the leases of
rebuilds and propagations, keeps the store's record and object names, and enforces the time
budgets. The prompt log is the owner's to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ray.serve.handle import DeploymentHandle

from deployments.protocol import (
    CREATE_METHOD,
    ClearResult,
    DeadlineExceededError,
    InvalidRequestError,
    MaskPage,
    NotFoundError,
    ObjectInfo,
    ObjectTimeline,
    Prompt,
    PromptResult,
    PropagationEvent,
    PropagationRequest,
    ReviewItem,
    ServiceSettings,
    SessionInfo,
    SessionUnavailableError,
    UnauthorizedError,
    VideoOptions,
    new_session_id,
)
from ingress import routing
from ingress.errors import unwrap
from ingress.schemas import Health, Session
from session_store import Lease, ObjectRecord, SessionRecord, SessionStore, leases

logger = logging.getLogger("ray.serve")
# Requests to free copies of sessions no caller will use, kept until they finish.
_settling: set[asyncio.Task[None]] = set()


class SessionService:
    """Session operations for one caller: with API keys on, ``caller`` is the hash of the
    caller's key and only that key's sessions exist for it (others get 404)."""

    def __init__(
        self,
        replicas: DeploymentHandle,
        store: SessionStore,
        settings: ServiceSettings,
        caller: str | None = None,
    ) -> None:
        self.replicas = replicas
        self.store = store
        self.settings = settings
        self.caller = caller

    def for_caller(self, api_key: str | None) -> SessionService:
        """This service as seen by the holder of ``api_key``; UnauthorizedError when keys are
        configured and it is missing or unknown."""
        keys = self.settings.api_keys
        if not keys:
            return self
        if api_key is None or not any(hmac.compare_digest(api_key, k) for k in keys):
            raise UnauthorizedError("a valid API key is required: Authorization: Bearer <key>")
        caller = hashlib.sha256(api_key.encode()).hexdigest()
        return SessionService(self.replicas, self.store, self.settings, caller)

    async def expire_forever(self) -> None:
        """Remove sessions idle past their TTL (model state, files, store keys), every
        ``expiry_check_s``; runs for the ingress's lifetime."""
        while True:
            await asyncio.sleep(self.settings.expiry_check_s)
            try:
                await self.expire()
            except Exception:  # the store may be restarting: try again next round
                logger.exception("expiring sessions failed")

    async def expire(self) -> list[str]:
        """Delete every session whose ``expires_at`` has passed, unless a live lease holds it (a
        rebuild or a propagation under way); their ids."""
        now = datetime.now(UTC)
        expired = [
            r.session_id
            for r in await self.store.list()
            if r.expires_at <= now and r.live_lease(now) is None
        ]
        for session_id in expired:
            with contextlib.suppress(NotFoundError):
                await self.delete(session_id, check_owner=False)
        return expired

    # ---- sessions ----------------------------------------------------------------------------

    async def create(
        self, video: Path, options: VideoOptions, model: str | None, is_upload: bool
    ) -> Session:
        """Place a new session on the replica with the most free slots and record it."""
        if model is not None and model != self.settings.model:
            raise InvalidRequestError(
                f"model {model!r} is not served here; this service runs {self.settings.model!r}"
            )
        session_id = new_session_id()
        try:
            info, replica = await self._call(
                CREATE_METHOD,
                self.settings.create_timeout_s,
                session_id=session_id,
                video=str(video),
                options=options,
                is_upload=is_upload,
            )
        except (DeadlineExceededError, asyncio.CancelledError):
            self._settle_later(session_id)  # given up: it may still be created, unrecorded
            raise
        now = datetime.now(UTC)
        record = SessionRecord(
            session_id=session_id,
            model=info.model,
            replica=replica,
            owner_key=self.caller,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.session_ttl_s),
            video=info.video.model_dump(mode="json"),
            options=options.model_dump(mode="json"),
        )
        try:
            await self.store.create(record)
        except BaseException:
            await self._call(
                "delete_session",
                self.settings.request_timeout_s,
                session_id=session_id,
                owner=replica,
            )
            raise
        return _session_view(record, info)

    async def get(self, session_id: str) -> Session:
        record = await self.record(session_id)
        info = await self.call(record, "session_info")
        return _session_view(record, info)

    async def list(self) -> list[Session]:
        records = [r for r in await self.store.list() if self._visible(r)]
        infos = await asyncio.gather(
            *(self.call(r, "session_info", touch=False, restore=False) for r in records),
            return_exceptions=True,
        )
        return [
            _session_view(r, info)
            if isinstance(info, SessionInfo)
            else _stored_view(r, await self.store.objects(r.session_id))
            for r, info in zip(records, infos, strict=True)
        ]

    async def delete(self, session_id: str, check_owner: bool = True) -> None:
        """Free the session on its replica; if that replica is gone, remove its files here
        (shared storage). The store record goes last, so nothing is left unlisted."""
        record = await self.record(session_id) if check_owner else await self._stored(session_id)
        try:
            await self.call(record, "delete_session", touch=False, restore=False)
        except SessionUnavailableError:
            await asyncio.to_thread(
                shutil.rmtree, self.settings.storage_root / session_id, ignore_errors=True
            )
        await self.store.delete(session_id)

    async def reset(self, session_id: str) -> Session:
        record = await self.record(session_id)
        info = await self.call(record, "reset")
        return _session_view(record, info)

    async def frame_jpeg(self, session_id: str, frame_index: int) -> bytes:
        return await self.call(await self.record(session_id), "frame_jpeg", frame_index=frame_index)

    # ---- objects and prompts -----------------------------------------------------------------

    async def add_prompt(self, session_id: str, prompt: Prompt) -> PromptResult:
        """Applied and appended to the prompt log by the owner; the object's entry (for its
        name) is kept here."""
        record = await self.record(session_id)
        result: PromptResult = await self.call(record, "add_prompt", prompt=prompt)
        if result.obj_id not in {o.obj_id for o in await self.store.objects(session_id)}:
            await self.store.put_object(session_id, ObjectRecord(obj_id=result.obj_id))
        return result

    async def clear_prompts(
        self, session_id: str, frame_index: int, obj_id: int | None
    ) -> ClearResult:
        record = await self.record(session_id)
        return await self.call(record, "clear_prompts", frame_index=frame_index, obj_id=obj_id)

    async def objects(self, session_id: str) -> list[ObjectInfo]:
        return await self.call(await self.record(session_id), "objects")

    async def update_object(
        self, session_id: str, obj_id: int, name: str | None, category: str | None
    ) -> ObjectInfo:
        record = await self.record(session_id)
        info: ObjectInfo = await self.call(
            record, "update_object", obj_id=obj_id, name=name, category=category
        )
        await self.store.put_object(
            session_id, ObjectRecord(obj_id=obj_id, name=info.name, category=info.category)
        )
        return info

    async def remove_object(self, session_id: str, obj_id: int) -> None:
        record = await self.record(session_id)
        await self.call(record, "remove_object", obj_id=obj_id)
        await self.store.delete_object(session_id, obj_id)

    # ---- propagation and masks ---------------------------------------------------------------

    async def propagate(
        self, session_id: str, request: PropagationRequest
    ) -> AsyncIterator[PropagationEvent]:
        """Start a propagation on the owner under a propagation lease; errors before the first
        frame raise here (so they get their HTTP status), later ones from the returned
        iterator."""
        record = await self.record(session_id)
        owner = await self._owner(record)
        await self._touch(record)
        try:
            first, stream = await self._start_stream(session_id, owner, request)
        except SessionUnavailableError:
            owner = await self._restore(record, lost=owner)
            first, stream = await self._start_stream(session_id, owner, request)
        lease = leases.new_lease("propagating", self.settings.lease_s)
        try:
            current, taken = await self.store.transition(
                session_id, leases.take_propagation(owner, lease)
            )
            if not taken:
                raise _lost(session_id, current)
        except BaseException:
            stream.cancel()
            raise
        return self._events(record, lease, first, stream)

    async def _start_stream(
        self, session_id: str, owner: str, request: PropagationRequest
    ) -> tuple[PropagationEvent, Any]:
        stream = self.replicas.options(method_name="propagate", stream=True).remote(
            session_id=session_id, owner=owner, request=request
        )
        try:
            first = await asyncio.wait_for(stream.__anext__(), self.settings.request_timeout_s)
        except BaseException as exc:
            stream.cancel()
            error = unwrap(exc)
            if error is exc:
                raise
            raise error from exc
        return first, stream

    async def cancel_propagation(self, session_id: str) -> bool:
        return await self.call(await self.record(session_id), "cancel_propagation")

    async def masks(
        self, session_id: str, start: int | None, end: int | None, obj_id: int | None, limit: int
    ) -> MaskPage:
        record = await self.record(session_id)
        return await self.call(record, "masks", start=start, end=end, obj_id=obj_id, limit=limit)

    # ---- exports, review, one-shot work ------------------------------------------------------

    async def export(self, session_id: str, fmt: str, obj_id: int | None) -> Path:
        record = await self.record(session_id)
        path = await self.call(
            record, "export", timeout_s=self.settings.export_timeout_s, fmt=fmt, obj_id=obj_id
        )
        return Path(path)

    async def overlay_jpeg(self, session_id: str, frame_index: int) -> bytes:
        record = await self.record(session_id)
        return await self.call(record, "overlay_jpeg", frame_index=frame_index)

    async def timeline(
        self, session_id: str, obj_id: int, score_threshold: float, iou_threshold: float
    ) -> ObjectTimeline:
        record = await self.record(session_id)
        return await self.call(
            record,
            "timeline",
            obj_id=obj_id,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
        )

    async def review(
        self, session_id: str, score_threshold: float, iou_threshold: float
    ) -> list[ReviewItem]:
        record = await self.record(session_id)
        return await self.call(
            record, "review", score_threshold=score_threshold, iou_threshold=iou_threshold
        )

    async def segment_image(
        self, image: bytes, prompt: Prompt
    ) -> tuple[PromptResult, int, int, float]:
        """On the replica with the most free slots, as a one-frame session."""
        return await self._call(
            "segment_image",
            self.settings.request_timeout_s,
            session_id=new_session_id(),
            image=image,
            prompt=prompt,
        )

    async def track(self, video: Path, prompt: Prompt) -> Path:
        """A short-lived session on the replica with the most free slots; the ZIP's path."""
        path = await self._call(
            "track",
            self.settings.export_timeout_s,
            session_id=new_session_id(),
            video=str(video),
            prompt=prompt,
        )
        return Path(path)

    # ---- service -----------------------------------------------------------------------------

    async def health(self) -> Health:
        stats = await self.replica_stats()
        reporting = [s for s in stats if "max_sessions" in s]
        gpu = [s["gpu_memory_mb"] for s in reporting if s.get("gpu_memory_mb") is not None]
        return Health(
            ready=bool(reporting),
            replicas=len(stats),
            active_sessions=sum(s["active_sessions"] for s in reporting),
            capacity=sum(s["max_sessions"] for s in reporting),
            queued_requests=sum(s["queued"] for s in reporting),
            gpu_memory_mb=sum(gpu) if gpu else None,
        )

    # ---- internals ---------------------------------------------------------------------------

    async def record(self, session_id: str) -> SessionRecord:
        """The caller's session; NotFoundError for unknown ones and for other keys' sessions."""
        record = await self._stored(session_id)
        if not self._visible(record):
            raise NotFoundError(f"session {session_id} not found", session_id=session_id)
        return record

    async def _stored(self, session_id: str) -> SessionRecord:
        record = await self.store.get(session_id)
        if record is None:
            raise NotFoundError(f"session {session_id} not found", session_id=session_id)
        return record

    def _visible(self, record: SessionRecord) -> bool:
        return self.caller is None or record.owner_key == self.caller

    async def call(
        self,
        record: SessionRecord,
        method: str,
        touch: bool = True,
        restore: bool = True,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` on the session's owner within the request's time budget. When the
        owner is gone (crash, kill, downscale), the session is first rebuilt on another replica
        (``restore``), unless the caller only wants to know."""
        owner = await self._owner(record) if restore else record.replica
        if touch:  # after the owner is known: a 503 while rebuilding does not extend the TTL
            await self._touch(record)
        timeout_s = timeout_s or self.settings.request_timeout_s
        try:
            return await self._call_owner(method, record, owner, timeout_s, **kwargs)
        except SessionUnavailableError:
            if not restore:
                raise
            owner = await self._restore(record, lost=owner)
            return await self._call_owner(method, record, owner, timeout_s, **kwargs)

    async def _call_owner(
        self,
        method: str,
        record: SessionRecord,
        owner: str | None,
        timeout_s: float,
        **kwargs: Any,
    ) -> Any:
        if owner is None:
            raise SessionUnavailableError(f"session {record.session_id} has no replica")
        return await self._call(
            method, timeout_s, session_id=record.session_id, owner=owner, **kwargs
        )

    async def _owner(self, record: SessionRecord) -> str:
        """The live owner's id; a session left without one is rebuilt first."""
        if record.replica is not None:
            return record.replica
        if record.status() == "restoring":
            raise SessionUnavailableError("the session is being restored; retry shortly")
        return await self._restore(record, lost=None)

    async def _restore(self, record: SessionRecord, lost: str | None) -> str:
        """Rebuild the session on the replica with the most free slots: frames and masks from
        the shared storage, the prompt log replayed. A rebuild lease, taken by compare-and-set
        and bounded by the rebuild's time budget, lets one rebuild win; requests meanwhile get
        503 with Retry-After, and a rebuilder that dies leaves a lease that lapses."""
        session_id = record.session_id
        lease = leases.new_lease("restoring", self.settings.create_timeout_s)
        current, won = await self.store.transition(session_id, leases.take_rebuild(lost, lease))
        if not won:
            if current is not None and current.replica not in (None, lost):
                record.replica = current.replica  # another request rebuilt it meanwhile
                return current.replica
            raise _lost(session_id, current, "the session is being restored; retry shortly")
        try:
            names = {o.obj_id: (o.name, o.category) for o in await self.store.objects(session_id)}
            log = await self.store.log(session_id)
            budget_s = (lease.until - datetime.now(UTC)).total_seconds()
            replica = await self._call(
                "restore_session", budget_s, session_id=session_id, log=log, names=names
            )
        except BaseException:
            await self._release(session_id, lease)
            raise
        current, owned = await self.store.transition(
            session_id, leases.finish_rebuild(lease, replica)
        )
        if not owned:
            self._settle_later(session_id, [replica])
            raise _lost(session_id, current, "the rebuild outlived its lease; retry")
        record.replica, record.lease = replica, None
        return replica

    def _settle_later(self, session_id: str, replicas: list[str] | None = None) -> None:
        """Ask ``replicas`` (default: every replica) to free their copy of a session no caller
        will use, in the background. Best effort: their reconciliation frees it anyway."""
        task = asyncio.create_task(self._settle(session_id, replicas))
        _settling.add(task)
        task.add_done_callback(_settling.discard)

    async def _settle(self, session_id: str, replicas: list[str] | None) -> None:
        budget_s = self.settings.request_timeout_s  # also bounds waiting for a late create
        try:
            if replicas is None:
                replicas = [s["replica"] for s in await self.replica_stats() if "replica" in s]
            await asyncio.gather(
                *(
                    self._call("settle_session", budget_s, session_id=session_id, owner=replica)
                    for replica in replicas
                ),
                return_exceptions=True,
            )
        except Exception:
            logger.warning("could not ask the replicas to free session %s", session_id)

    async def _release(self, session_id: str, lease: Lease) -> None:
        """Give a lease back at once; if the store cannot take it now, the lease lapses."""
        try:
            await self.store.transition(session_id, leases.release(lease))
        except Exception:
            logger.warning("could not release the %s lease of %s", lease.kind, session_id)

    async def _call(self, method: str, timeout_s: float, **kwargs: Any) -> Any:
        """A replica call within ``timeout_s``; Ray's wrappers unwrapped into project errors."""
        response = self.replicas.options(method_name=method).remote(**kwargs)
        try:
            return await asyncio.wait_for(response, timeout_s)
        except TimeoutError:
            response.cancel()
            raise DeadlineExceededError(
                f"{method} took longer than its {timeout_s:g}s budget", budget_s=timeout_s
            ) from None
        except Exception as exc:
            error = unwrap(exc)
            if error is exc:
                raise
            raise error from exc

    async def _touch(self, record: SessionRecord) -> None:
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.settings.session_ttl_s)
        await self.store.update(record.session_id, last_used_at=now, expires_at=expires)
        record.last_used_at, record.expires_at = now, expires

    async def _events(
        self, record: SessionRecord, lease: Lease, first: PropagationEvent, stream: Any
    ) -> AsyncIterator[PropagationEvent]:
        """The propagation's events within its time budget. While frames flow, the lease and the
        TTL are renewed (expiry counts idle time only); when the stream ends or is closed, the
        lease is released and the TTL restarts. A stream abandoned before it started, or an
        ingress that dies, leaves a lease that lapses ``lease_s`` after the last frame."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.propagate_timeout_s
        renew_every = min(self.settings.session_ttl_s / 4, self.settings.lease_s / 3)
        renewed = loop.time()
        try:
            yield first
            while True:
                remaining = deadline - loop.time()
                try:
                    event = await asyncio.wait_for(stream.__anext__(), max(remaining, 0))
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise DeadlineExceededError(
                        "the propagation ran past its time budget",
                        budget_s=self.settings.propagate_timeout_s,
                    ) from None
                if loop.time() - renewed >= renew_every:
                    lease = await self._renew(record, lease)
                    renewed = loop.time()
                yield event
        finally:
            stream.cancel()
            await self._release(record.session_id, lease)
            with contextlib.suppress(Exception):  # the TTL restarts at the next request anyway
                await self._touch(record)

    async def _renew(self, record: SessionRecord, lease: Lease) -> Lease:
        """The propagation's lease renewed, and the TTL. Best effort: the frames are the
        owner's to store, so a store that does not answer now stops nothing (its lease may
        lapse, and the session then counts as ready)."""
        extended = leases.renewed(lease, self.settings.lease_s)
        try:
            await self._touch(record)
            _, written = await self.store.transition(
                record.session_id, leases.extend(extended, record.replica)
            )
        except Exception:
            logger.warning("could not renew the propagation lease of %s", record.session_id)
            return lease
        return extended if written else lease

    async def replica_stats(self) -> list[dict[str, Any]]:
        """Each replica's latest routing stats, as this process's session router holds them."""
        if not routing.live_routers:
            await self._call("status", self.settings.request_timeout_s)  # starts the router
        by_replica: dict[str, dict[str, Any]] = {}
        for router in list(routing.live_routers):
            for stats in router.replica_stats():
                by_replica[stats.get("replica", str(len(by_replica)))] = stats
        return list(by_replica.values())


def _session_view(record: SessionRecord, info: SessionInfo) -> Session:
    """The contract's Session: the store's record and the owner's live view of it."""
    return Session(
        **record.model_dump(include={"session_id", "model", "created_at", "expires_at", "replica"}),
        **info.model_dump(include={"status", "video", "objects", "propagation", "preparation"}),
    )


def _stored_view(record: SessionRecord, objects: list[ObjectRecord]) -> Session:
    """What the store alone knows, when the owner cannot answer."""
    live = SessionInfo.model_validate(
        {
            **record.model_dump(),
            "status": record.status(),
            "objects": [o.model_dump() for o in objects],
        }
    )
    return _session_view(record, live)


def _lost(
    session_id: str, current: SessionRecord | None, message: str = "the session moved; retry"
) -> Exception:
    """The error for a lease not taken: the session is gone (404) or held elsewhere (503)."""
    if current is None:
        return NotFoundError(f"session {session_id} not found", session_id=session_id)
    return SessionUnavailableError(message)

"""``SessionService``: what the routes do, between the session store and the SAM 2 replicas.

It keeps the store's record and object names, scopes sessions to the caller's API key, and
calls the session's owner through ``Ownership`` (which rebuilds a session whose owner is gone).
Propagations stream through ``propagation_stream``, text prompts go through ``Concepts``, idle
sessions go through ``Expiry``, and ``/health`` reads ``health``. The prompt log is the owner's
to write.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ray.serve.handle import DeploymentHandle

from deployments.protocol import (
    ClearResult,
    DeadlineExceededError,
    ExportFormat,
    InvalidRequestError,
    MaskPage,
    NotFoundError,
    ObjectInfo,
    ObjectTimeline,
    Prompt,
    PromptResult,
    PropagationRequest,
    ReviewItem,
    ServiceSettings,
    SessionInfo,
    SessionUnavailableError,
    UnauthorizedError,
    VideoOptions,
    new_session_id,
)
from deployments.protocol.concepts import (
    ConceptQuery,
    PropagationStreamEvent,
    TextPrompt,
    TextPromptResult,
)
from deployments.protocol.locations import ObjectLocation
from ingress.concepts import Concepts
from ingress.expiry import Expiry
from ingress.health import health_report, replica_stats
from ingress.ownership import Ownership
from ingress.propagation_stream import start_propagation
from ingress.schemas import Health, ImageSegmentation, Session
from session_store import ObjectRecord, SessionRecord, SessionStore


class SessionService:
    """Session operations for one caller: with API keys on, ``caller`` is the hash of the
    caller's key and only that key's sessions exist for it (others get 404). ``detector``: the
    ConceptDetector deployment's handle, where one is configured."""

    def __init__(
        self,
        replicas: DeploymentHandle,
        store: SessionStore,
        settings: ServiceSettings,
        caller: str | None = None,
        detector: DeploymentHandle | None = None,
    ) -> None:
        self.replicas = replicas
        self.store = store
        self.settings = settings
        self.caller = caller
        self.detector = detector
        self.expiry = Expiry(store, settings)
        self.ownership = Ownership(replicas, store, settings, self.expiry)
        self.concepts = Concepts(self.ownership, settings, detector)

    def for_caller(self, api_key: str | None) -> SessionService:
        """This service as seen by the holder of ``api_key``; UnauthorizedError when keys are
        configured and it is missing or unknown."""
        keys = self.settings.api_keys
        if not keys:
            return self
        if api_key is None or not any(hmac.compare_digest(api_key, k) for k in keys):
            raise UnauthorizedError("a valid API key is required: Authorization: Bearer <key>")
        caller = hashlib.sha256(api_key.encode()).hexdigest()
        return SessionService(self.replicas, self.store, self.settings, caller, self.detector)

    async def expire_forever(self) -> None:
        """Remove sessions idle past their TTL every ``expiry_check_s``; runs for the ingress's
        lifetime."""
        await self.expiry.expire_forever(self._delete_stored)

    async def expire(self) -> list[str]:
        """Delete every session idle past its TTL and under no live lease; their ids."""
        return await self.expiry.expire(self._delete_stored)

    # ---- sessions ----------------------------------------------------------------------------

    async def create(
        self,
        video: Path | ObjectLocation,
        options: VideoOptions,
        model: str | None,
        is_upload: bool,
    ) -> Session:
        """Place a new session on the replica with the most free slots and record it."""
        if model is not None and model != self.settings.model:
            raise InvalidRequestError(
                f"model {model!r} is not served here; this service runs {self.settings.model!r}"
            )
        session_id = new_session_id()
        try:
            info, replica = await self.ownership.replica_api(
                self.settings.create_timeout_s
            ).create_session(
                session_id=session_id, video=str(video), options=options, is_upload=is_upload
            )
        except (DeadlineExceededError, asyncio.CancelledError):
            self.ownership.free_later(session_id)  # given up: it may still be created, unrecorded
            raise
        now = datetime.now(UTC)
        record = SessionRecord(
            session_id=session_id,
            model=info.model,
            replica=replica,
            creator_key=self.caller,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.session_ttl_s),
            video=info.video.model_dump(mode="json"),
            options=options.model_dump(mode="json"),
        )
        try:
            await self.store.create(record)
        except BaseException:
            await self.ownership.replica_api().delete_session(session_id=session_id, owner=replica)
            raise
        return _session_view(record, info)

    async def get(self, session_id: str) -> Session:
        record = await self.record(session_id)
        info = await self.ownership.call(
            record, lambda api, owner: api.session_info(session_id=session_id, owner=owner)
        )
        return _session_view(record, info)

    async def list(self) -> list[Session]:
        records = [r for r in await self.store.list() if self._visible(r)]
        infos = await asyncio.gather(*map(self._held_info, records), return_exceptions=True)
        return [
            _session_view(r, info)
            if isinstance(info, SessionInfo)
            else _stored_view(r, await self.store.objects(r.session_id))
            for r, info in zip(records, infos, strict=True)
        ]

    async def delete(self, session_id: str) -> None:
        """Free the session on its replica and remove its record."""
        await self._delete(await self.record(session_id))

    async def reset(self, session_id: str) -> Session:
        record = await self.record(session_id)
        info = await self.ownership.call(
            record, lambda api, owner: api.reset(session_id=session_id, owner=owner)
        )
        return _session_view(record, info)

    async def frame_jpeg(self, session_id: str, frame_index: int) -> bytes:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.frame_jpeg(
                session_id=session_id, owner=owner, frame_index=frame_index
            ),
        )

    # ---- objects and prompts -----------------------------------------------------------------

    async def add_prompt(self, session_id: str, prompt: Prompt) -> PromptResult:
        """Applied and appended to the prompt log by the owner; the object's entry (for its
        name) is kept here."""
        record = await self.record(session_id)
        result = await self.ownership.call(
            record,
            lambda api, owner: api.add_prompt(session_id=session_id, owner=owner, prompt=prompt),
        )
        if result.obj_id not in {o.obj_id for o in await self.store.objects(session_id)}:
            await self.store.put_object(session_id, ObjectRecord(obj_id=result.obj_id))
        return result

    async def add_text_prompt(self, session_id: str, prompt: TextPrompt) -> TextPromptResult:
        return await self.concepts.add_text_prompt(await self.record(session_id), prompt)

    async def clear_prompts(
        self, session_id: str, frame_index: int, obj_id: int | None
    ) -> ClearResult:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.clear_prompts(
                session_id=session_id, owner=owner, frame_index=frame_index, obj_id=obj_id
            ),
        )

    async def objects(self, session_id: str) -> list[ObjectInfo]:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.objects(session_id=session_id, owner=owner),
        )

    async def update_object(
        self, session_id: str, obj_id: int, name: str | None, category: str | None
    ) -> ObjectInfo:
        info = await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.update_object(
                session_id=session_id, owner=owner, obj_id=obj_id, name=name, category=category
            ),
        )
        await self.store.put_object(
            session_id, ObjectRecord(obj_id=obj_id, name=info.name, category=info.category)
        )
        return info

    async def remove_object(self, session_id: str, obj_id: int) -> None:
        await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.remove_object(session_id=session_id, owner=owner, obj_id=obj_id),
        )
        await self.store.delete_object(session_id, obj_id)

    # ---- propagation and masks ---------------------------------------------------------------

    async def propagate(
        self, session_id: str, request: PropagationRequest
    ) -> AsyncIterator[PropagationStreamEvent]:
        """Start a propagation on the owner under a propagation lease; errors before the first
        frame raise here (so they get their HTTP status), later ones from the returned
        iterator."""
        record = await self.record(session_id)
        if request.redetect is not None:
            self.concepts.check(request.redetect.text)
        return await start_propagation(self.ownership, record, request, self.concepts)

    async def cancel_propagation(self, session_id: str) -> bool:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.cancel_propagation(session_id=session_id, owner=owner),
        )

    async def masks(
        self, session_id: str, start: int | None, end: int | None, obj_id: int | None, limit: int
    ) -> MaskPage:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.masks(
                session_id=session_id,
                owner=owner,
                start=start,
                end=end,
                obj_id=obj_id,
                limit=limit,
            ),
        )

    # ---- exports, review, one-shot work ------------------------------------------------------

    async def export(self, session_id: str, fmt: ExportFormat, obj_id: int | None) -> Path:
        path = await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.export(
                session_id=session_id, owner=owner, fmt=fmt, obj_id=obj_id
            ),
            timeout_s=self.settings.export_timeout_s,
        )
        return Path(path)

    async def overlay_jpeg(self, session_id: str, frame_index: int) -> bytes:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.overlay_jpeg(
                session_id=session_id, owner=owner, frame_index=frame_index
            ),
        )

    async def timeline(
        self, session_id: str, obj_id: int, score_threshold: float, iou_threshold: float
    ) -> ObjectTimeline:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.timeline(
                session_id=session_id,
                owner=owner,
                obj_id=obj_id,
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
            ),
        )

    async def review(
        self, session_id: str, score_threshold: float, iou_threshold: float
    ) -> list[ReviewItem]:
        return await self.ownership.call(
            await self.record(session_id),
            lambda api, owner: api.review(
                session_id=session_id,
                owner=owner,
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
            ),
        )

    async def segment_image(
        self, image: bytes, prompt: Prompt | None, query: ConceptQuery | None, normalized: bool
    ) -> ImageSegmentation:
        """SAM 2 on the replica with the most free slots, as a one-frame session, for the
        points or box; the concept detector for the text."""
        return await self.concepts.segment_image(image, prompt, query, normalized)

    async def track(self, video: Path, prompt: Prompt) -> Path:
        """A short-lived session on the replica with the most free slots; the ZIP's path."""
        path = await self.ownership.replica_api(self.settings.export_timeout_s).track(
            session_id=new_session_id(), video=str(video), prompt=prompt
        )
        return Path(path)

    # ---- service -----------------------------------------------------------------------------

    async def health(self) -> Health:
        return health_report(await self.replica_stats())

    async def replica_stats(self) -> list[dict[str, Any]]:
        """Each replica's latest routing stats, as this process's session routers hold them."""
        return await replica_stats(self.replicas, self.settings.request_timeout_s)

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
        return self.caller is None or record.creator_key == self.caller

    async def _held_info(self, record: SessionRecord) -> SessionInfo:
        """The owner's view of a session, if its owner holds it (no rebuild, no touch)."""
        session_id = record.session_id
        return await self.ownership.call(
            record,
            lambda api, owner: api.session_info(session_id=session_id, owner=owner),
            touch=False,
            rebuild=False,
        )

    async def _delete_stored(self, session_id: str) -> None:
        """Delete a session whoever's it is (expiry)."""
        await self._delete(await self._stored(session_id))

    async def _delete(self, record: SessionRecord) -> None:
        """Free the session on its replica; if that replica is gone, remove its files here
        (shared storage). The store record goes last, so nothing is left unlisted."""
        session_id = record.session_id
        try:
            await self.ownership.call(
                record,
                lambda api, owner: api.delete_session(session_id=session_id, owner=owner),
                touch=False,
                rebuild=False,
            )
        except SessionUnavailableError:
            await asyncio.to_thread(
                shutil.rmtree, self.settings.storage_root / session_id, ignore_errors=True
            )
        await self.store.delete(session_id)


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

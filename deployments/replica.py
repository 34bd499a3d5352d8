"""``SAM2Replica``: the Ray Serve deployment, a thin shell over one ``SessionEngine``.

The model is loaded once per replica. Engine calls block (they wait on the model thread), so
every one runs in a thread pool and the replica's event loop stays free for Serve's health
checks and for other sessions. Every session-scoped method takes ``owner``, the replica id the
ingress found in the session store, and refuses a request that reached the wrong replica.

It implements ``deployments.protocol.ReplicaApi``, the methods the ingress calls. The sessions
it creates or rebuilds are adopted (``reconciliation``): their prompt logs are written to the
session store as the engine applies each operation (``journal``), and those the store gives to
no one here are freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.autoscaling import ACTIVE_SESSIONS
from deployments.detection import Detector, detector_input
from deployments.engine import EngineSession, SessionEngine
from deployments.engine.video import decode_image
from deployments.journal import PromptJournal
from deployments.metrics import ReplicaMetrics, replica_stats
from deployments.protocol import (
    EXPORTS,
    ClearResult,
    ExportFormat,
    FrameMasks,
    MaskPage,
    NotFoundError,
    ObjectInfo,
    ObjectNames,
    ObjectTimeline,
    Prompt,
    PromptResult,
    PropagationDone,
    PropagationRequest,
    ReviewItem,
    ServiceSettings,
    SessionInfo,
    SessionUnavailableError,
    StoreUnavailableError,
    VideoOptions,
)
from deployments.protocol.concepts import PropagationStreamEvent, TextPrompt, TextPromptResult
from deployments.protocol.locations import ObjectLocation
from deployments.reconciliation import Reconciler
from session_store import LogEntry, open_store

T = TypeVar("T")
logger = logging.getLogger("ray.serve")


class SAM2Replica:
    """Holds up to ``max_sessions`` sessions over one loaded SAM 2 model; ``detector``, the
    ConceptDetector deployment's handle, where one is configured (text prompts)."""

    def __init__(self, settings: dict[str, Any], detector: DeploymentHandle | None = None) -> None:
        self.settings = ServiceSettings(**settings)
        self.engine = SessionEngine(self.settings)
        self._detector = Detector(detector, self.settings.detector_timeout_s)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._pool = ThreadPoolExecutor(
            max_workers=self.settings.max_ongoing_requests, thread_name_prefix="engine-call"
        )
        self._metrics = ReplicaMetrics(self.engine.model_name)
        store = open_store(self.settings)
        loop = asyncio.get_running_loop()  # Serve runs the constructor on it
        self._reconciler = Reconciler(
            self.engine,
            store,
            PromptJournal(store, loop, self.settings.journal_timeout_s),
            self.replica_id,
            self.settings.reconcile_s,
            self.settings.settle_poll_s,
            self._pool,
            freed=self._count_sessions,
        )
        self._reconciling = loop.create_task(self._reconciler.reconcile_forever())
        logger.info(
            "SAM 2 replica %s: model %s on %s, computing in %s, compile %s, warm-up %.1f s",
            self.replica_id,
            self.engine.model_name,
            self.engine.predictor.device,
            self.engine.compute_dtype,
            self.settings.compile,
            self.engine.warmup_s,
        )

    # ---- Serve hooks -------------------------------------------------------------------------

    async def check_health(self) -> None:
        """Runs on the event loop, so a blocked loop fails it; also checks the model thread."""
        if not self.engine.executor.alive:
            raise RuntimeError("the model thread has stopped")

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {ACTIVE_SESSIONS: float(self.engine.active_sessions)}

    def record_routing_stats(self) -> dict[str, Any]:
        """Read by the ingress's session router (placement) and by /health."""
        self._count_sessions()
        return replica_stats(self.engine, self.settings, self.replica_id)

    async def status(self) -> dict[str, Any]:
        return replica_stats(self.engine, self.settings, self.replica_id)

    def __del__(self) -> None:
        """Free the sessions' memory when Serve stops the replica; their files stay on the
        shared storage, so the next request rebuilds each on a live replica."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    # ---- sessions ----------------------------------------------------------------------------

    async def create_session(
        self, *, session_id: str, video: str, options: VideoOptions, is_upload: bool
    ) -> tuple[SessionInfo, str]:
        """Index ``video`` (a file on the shared storage, or an ``s3://`` URL) as a new session;
        returns its info and this replica's id. An upload is moved into the session's directory,
        which owns it from then on; one that fails to become a session is removed. A server-side
        video or an object is only read."""
        create = partial(self._create, move=is_upload)
        source = ObjectLocation.parse(video) if ObjectLocation.is_url(video) else Path(video)
        try:
            info = await self._call(create, source, options, session_id)
        except BaseException:
            if is_upload:
                Path(video).unlink(missing_ok=True)  # refused before it was moved
            raise
        self._count_sessions()
        return info, self.replica_id

    async def rebuild_session(
        self,
        *,
        session_id: str,
        log: list[dict[str, Any]],
        names: ObjectNames,
    ) -> str:
        """Rebuild a session whose replica is gone: reopen its directory from the shared storage
        and replay its prompt log. Returns this replica's id, the new owner. If the caller gives
        up meanwhile, the copy is forgotten as soon as it is built."""
        rebuild = self._pool.submit(self._rebuild, session_id, log, names)
        try:
            await asyncio.shield(asyncio.wrap_future(rebuild))
        except asyncio.CancelledError:
            forget = partial(self._pool.submit, self.engine.forget_session, session_id)
            rebuild.add_done_callback(lambda _: forget())
            raise
        self._count_sessions()
        return self.replica_id

    async def settle_session(self, *, session_id: str, owner: str) -> bool:
        """Free this replica's copy of a session its caller gave up on (a create that timed
        out, a rebuild that lost its lease) once a creation of it still running here has ended
        (the caller's budget bounds the wait): deleted with its files when the store has no
        record of it, forgotten when the record names another owner. Whether a copy was
        freed."""
        if owner != self.replica_id:
            raise SessionUnavailableError(f"this is replica {self.replica_id}, not {owner}")
        return await self._reconciler.settle_after_creation(session_id)

    async def session_info(self, *, session_id: str, owner: str) -> SessionInfo:
        return self._session(session_id, owner).info()

    async def delete_session(self, *, session_id: str, owner: str) -> None:
        self._session(session_id, owner)
        await self._call(self.engine.delete_session, session_id)
        self._count_sessions()

    async def reset(self, *, session_id: str, owner: str) -> SessionInfo:
        return await self._journaled(session_id, self._session(session_id, owner).reset)

    async def frame_jpeg(self, *, session_id: str, owner: str, frame_index: int) -> bytes:
        return await self._call(self._session(session_id, owner).frame_jpeg, frame_index)

    # ---- objects and prompts -----------------------------------------------------------------

    async def add_prompt(self, *, session_id: str, owner: str, prompt: Prompt) -> PromptResult:
        session = self._session(session_id, owner)
        started = time.perf_counter()
        result = await self._journaled(session_id, session.add_prompt, prompt)
        self._metrics.click_latency.observe(time.perf_counter() - started)
        return result

    async def add_text_prompt(
        self, *, session_id: str, owner: str, prompt: TextPrompt
    ) -> TextPromptResult:
        """The detector finds the instances first; only then is the session changed, so a
        detector that fails leaves it as it was."""
        session = self._session(session_id, owner)
        self._detector.require()
        frame, query = await self._call(detector_input, session, prompt)
        instances = await self._detector.detect(frame, query)
        return await self._journaled(session_id, session.add_text_prompt, prompt, instances)

    async def clear_prompts(
        self, *, session_id: str, owner: str, frame_index: int, obj_id: int | None
    ) -> ClearResult:
        session = self._session(session_id, owner)
        return await self._journaled(session_id, session.clear_prompts, frame_index, obj_id)

    async def objects(self, *, session_id: str, owner: str) -> list[ObjectInfo]:
        return await self._call(self._session(session_id, owner).objects)

    async def update_object(
        self, *, session_id: str, owner: str, obj_id: int, name: str | None, category: str | None
    ) -> ObjectInfo:
        session = self._session(session_id, owner)
        return await self._call(session.update_object, obj_id, name, category)

    async def remove_object(self, *, session_id: str, owner: str, obj_id: int) -> None:
        await self._journaled(session_id, self._session(session_id, owner).remove_object, obj_id)

    # ---- propagation and masks ---------------------------------------------------------------

    async def propagate(
        self, *, session_id: str, owner: str, request: PropagationRequest
    ) -> AsyncIterator[PropagationStreamEvent]:
        """Stream one event per frame, then the summary. An async generator, so a client that
        disconnects cancels it: the engine then stops after the frame in flight. With
        ``redetect``, the engine calls the detector from the engine-call thread that steps
        it (``Detector.redetector``)."""
        session = self._session(session_id, owner)
        detect = self._detector.redetector(request.redetect)
        events = await self._call(session.propagate, request, detect)
        try:
            while (event := await self._call(next, events, None)) is not None:
                if isinstance(event, PropagationDone):
                    self._metrics.record_propagation(event)
                elif isinstance(event, FrameMasks):
                    self._metrics.frames_propagated.inc()
                yield event
        finally:
            self._pool.submit(events.close)

    async def cancel_propagation(self, *, session_id: str, owner: str) -> bool:
        return self._session(session_id, owner).cancel_propagation()

    async def masks(
        self,
        *,
        session_id: str,
        owner: str,
        start: int | None,
        end: int | None,
        obj_id: int | None,
        limit: int,
    ) -> MaskPage:
        session = self._session(session_id, owner)
        return await self._call(session.masks.page, start, end, obj_id, limit)

    # ---- exports, review, one-shot work ------------------------------------------------------

    async def export(
        self, *, session_id: str, owner: str, fmt: ExportFormat, obj_id: int | None
    ) -> str:
        """Write the export to a spool file on the shared storage; the ingress streams it to the
        client and removes it."""
        session = self._session(session_id, owner)
        target = self._spool_file(EXPORTS[fmt][1])
        try:
            await self._call(session.export, fmt, target, obj_id)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return str(target)

    async def overlay_jpeg(self, *, session_id: str, owner: str, frame_index: int) -> bytes:
        return await self._call(self._session(session_id, owner).overlay_jpeg, frame_index)

    async def timeline(
        self,
        *,
        session_id: str,
        owner: str,
        obj_id: int,
        score_threshold: float,
        iou_threshold: float,
    ) -> ObjectTimeline:
        session = self._session(session_id, owner)
        return await self._call(session.timeline, obj_id, score_threshold, iou_threshold)

    async def review(
        self, *, session_id: str, owner: str, score_threshold: float, iou_threshold: float
    ) -> list[ReviewItem]:
        session = self._session(session_id, owner)
        return await self._call(session.review, score_threshold, iou_threshold)

    async def segment_image(
        self, *, session_id: str, image: bytes, prompt: Prompt
    ) -> tuple[PromptResult, int, int, float]:
        """(result, width, height, inference ms) of one image as a one-frame session."""
        rgb = decode_image(image)
        started = time.perf_counter()
        result = await self._call(self.engine.segment_image, rgb, prompt, session_id)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return result, rgb.shape[1], rgb.shape[0], round(elapsed_ms, 1)

    async def track(self, *, session_id: str, video: str, prompt: Prompt) -> str:
        """``/track``: a short-lived session on the upload (source resolution), the prompt,
        propagation both ways, a ZIP of one PNG mask per frame; the session and the upload
        (moved into it) are gone afterwards. Returns the ZIP's spool path."""
        target = self._spool_file(".zip")
        try:
            await self._call(self._track, session_id, Path(video), prompt, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            Path(video).unlink(missing_ok=True)  # refused before it was moved
        return str(target)

    def _track(self, session_id: str, video: Path, prompt: Prompt, target: Path) -> None:
        self.engine.create_session(video, VideoOptions(), session_id, move=True)
        try:
            session = self.engine.session(session_id)
            session.add_prompt(prompt)
            start = PropagationRequest(direction="both", start_frame_index=prompt.frame_index)
            for _ in session.propagate(start):
                pass
            session.export_track_zip(target)
        finally:
            self.engine.delete_session(session_id)

    # ---- internals ---------------------------------------------------------------------------

    def _spool_file(self, suffix: str) -> Path:
        self.settings.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.settings.spool_dir / f"{uuid.uuid4().hex}{suffix}"

    def _session(self, session_id: str, owner: str) -> EngineSession:
        if owner != self.replica_id:
            raise SessionUnavailableError(
                f"session {session_id} belongs to replica {owner}, not {self.replica_id}"
            )
        try:
            return self.engine.session(session_id)
        except NotFoundError as exc:
            raise SessionUnavailableError(
                f"replica {self.replica_id} no longer holds session {session_id}"
            ) from exc

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _journaled(self, session_id: str, fn: Callable[..., T], *args: Any) -> T:
        """An engine call that appends to the prompt log. If the store did not take the entry,
        the session's state is ahead of its log: it is forgotten here (files kept), and the
        next request rebuilds it from the log."""
        try:
            return await self._call(fn, *args)
        except StoreUnavailableError:
            await self._call(self.engine.forget_session, session_id)
            raise

    def _create(
        self, video: Path | ObjectLocation, options: VideoOptions, session_id: str, *, move: bool
    ) -> SessionInfo:
        """Create and adopt in one engine call, so a create whose caller gives up midway is
        still watched by reconciliation."""
        info = self.engine.create_session(video, options, session_id, move=move)
        self._reconciler.adopt(session_id)
        return info

    def _rebuild(self, session_id: str, log: list[LogEntry], names: ObjectNames) -> None:
        """Open and replay, then adopt (an engine-call thread); nothing is held if it fails."""
        self._reconciler.disown(session_id)
        self.engine.forget_session(session_id)  # a stale copy of it here goes first
        session = self.engine.open_session(session_id)
        try:
            session.rebuild(log, names)
        except BaseException:
            self.engine.forget_session(session_id)
            raise
        self._reconciler.adopt(session_id)

    def _count_sessions(self) -> None:
        self._metrics.active_sessions.set(self.engine.active_sessions)

"""``SessionEngine``: one loaded SAM 2 model shared by up to ``max_sessions`` sessions.

Plain Python (no Ray, no HTTP): the Serve replica is a thin shell over it. It owns session
lifecycle and capacity; the per-session operations are on ``EngineSession``.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

import deployments.engine.compilation as compilation
from deployments.engine.executor import ModelExecutor
from deployments.engine.features import EncoderBatcher
from deployments.engine.frames import FrameSource
from deployments.engine.host_memory import release_free_memory
from deployments.engine.mask_store import MaskStores
from deployments.engine.models import load_predictor, resolve_device
from deployments.engine.object_video import ObjectStore, ObjectVideo
from deployments.engine.precision import resolve_compute_dtype
from deployments.engine.predictor import ServingVideoPredictor
from deployments.engine.session import EngineSession
from deployments.engine.still_image import ImageReader, write_image
from deployments.engine.video import SessionVideo, load_video, store_video
from deployments.engine.video_reader import FrameReader
from deployments.protocol.errors import (
    CapacityError,
    ConflictError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
)
from deployments.protocol.locations import ObjectLocation
from deployments.protocol.registry import resolve_spec
from deployments.protocol.settings import EngineSettings
from deployments.protocol.types import (
    SESSION_ID_PATTERN,
    Prompt,
    PromptResult,
    PropagationRequest,
    SessionInfo,
    VideoInfo,
    VideoOptions,
    new_session_id,
)

_SESSION_ID = re.compile(SESSION_ID_PATTERN)
IMAGE_FILE = "image.png"
T = TypeVar("T")


class SessionEngine:
    """Creates, finds and frees sessions over one model and one fair ``ModelExecutor``."""

    def __init__(
        self, settings: EngineSettings, predictor: ServingVideoPredictor | None = None
    ) -> None:
        """Load the model the settings name, unless a built ``predictor`` is given (tests share
        one between engines). Raises ModelLoadError; StoreUnavailableError when the settings
        name the PostgreSQL mask store and its database does not answer."""
        self.settings = settings
        self.objects = ObjectStore(settings)
        # Each session's MaskStore; with PostgreSQL, this process's pool (opened and migrated
        # here: StoreUnavailableError if the database does not answer).
        self.mask_stores = MaskStores.from_settings(settings)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.model_name = resolve_spec(settings).name
        if predictor is not None:
            device, dtype = predictor.device, predictor.compute_dtype
        else:
            device = resolve_device(settings.device)
            dtype = resolve_compute_dtype(settings.compute_dtype, device)
        self.executor = ModelExecutor(device, dtype)
        # Built on the model thread itself: built on one thread and run on another, torch's
        # OpenMP workers sleep between operations (measured 10-50% slower on CPU).
        self.predictor = predictor or self.executor.run("engine", lambda: load_predictor(settings))
        if settings.max_encoder_batch > 1:
            self.executor.batcher = EncoderBatcher(self.predictor, settings.max_encoder_batch)
        self._sessions: dict[str, EngineSession] = {}
        self._creating: set[str] = set()
        self._lock = threading.Lock()
        # Seconds the warm-up took, compiling included (None: a given predictor, not warmed).
        self.warmup_s: float | None = None
        if predictor is None:
            self.warmup_s = self._warm_up()

    def _warm_up(self) -> float:
        """Two clicks on a blank image (a one-frame session) before the first user's: the first
        calls into a freshly built model pay for kernel selection and allocations (measured
        2.7 s and 1.7 s against 0.4 s for the image encoder at size 256 on CPU). With
        ``compile`` set this is where torch.compile compiles: the clicks, encoder batches up to
        ``max_encoder_batch``, then a click and propagation through a blank clip (see
        ``compilation``). Returns its seconds; ModelLoadError if compiling fails.
        """
        began = time.perf_counter()
        blank = np.zeros((64, 64, 3), np.uint8)
        mode = self.settings.compile
        batches = range(1, self.settings.max_encoder_batch + 1)
        try:
            for _ in range(2):
                self.segment_image(blank, Prompt(frame_index=0, obj_id=1, points=[(32.0, 32.0)]))
            if mode != "none":
                encoder = partial(compilation.warm_up_encoder, self.predictor, batches)
                self.executor.run("engine", encoder)
                self._scratch_session(new_session_id(), _blank_clip, _click_and_propagate)
        except Exception as exc:
            if mode == "none":
                raise
            self.executor.close()
            raise ModelLoadError(
                f"compile: {mode} failed while warming up ({type(exc).__name__}: {exc}); "
                "compile: none runs SAM 2 uncompiled"
            ) from exc
        return time.perf_counter() - began

    @property
    def compute_dtype(self) -> str:
        """The dtype the model computes in: ``float32`` or ``bfloat16``."""
        return str(self.executor.dtype).removeprefix("torch.")

    @property
    def active_sessions(self) -> int:
        return len(self.session_ids())

    def session_ids(self) -> list[str]:
        """Sessions held or being created: each takes a slot."""
        with self._lock:
            return [*self._sessions, *self._creating]

    @property
    def free_slots(self) -> int:
        return self.settings.max_sessions - self.active_sessions

    def create_session(
        self,
        video: Path | ObjectLocation,
        options: VideoOptions | None = None,
        session_id: str | None = None,
        *,
        move: bool = False,
    ) -> SessionInfo:
        """Index ``video`` into a new session directory and open a session on it; frames are
        decoded on demand. With ``move`` (an upload on the shared storage) the file is moved
        into the session directory, which then owns it; otherwise it is referenced in place,
        read-only. An object (``s3://``) is referenced too, and read with range requests.

        Raises CapacityError when every slot is taken, BadVideoError / VideoTooLargeError /
        InvalidRequestError for the video, ConflictError for a session id in use; for an object
        ForbiddenPathError (bucket not allow-listed), NotFoundError and
        ObjectStoreUnavailableError. A failed creation leaves no files behind (a moved upload
        goes with the directory).
        """
        session_id = session_id or new_session_id()
        if not _SESSION_ID.match(session_id):
            raise InvalidRequestError("session ids are 8-64 characters of [A-Za-z0-9_-]")
        self._reserve(session_id)
        directory = self.settings.storage_root / session_id
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            self._release(session_id)
            raise ConflictError(f"session {session_id} already exists") from None
        try:
            source = (
                ObjectVideo(self.objects, video) if isinstance(video, ObjectLocation) else video
            )
            stored = store_video(
                directory,
                source,
                options or VideoOptions(),
                move=move,
                max_frames=self.settings.max_video_frames,
                max_seconds=self.settings.max_video_seconds,
            )
            session = self._open_video(session_id, directory, stored)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            self._release(session_id)
            raise
        with self._lock:
            self._creating.discard(session_id)
            self._sessions[session_id] = session
        return session.info()

    def segment_image(
        self, image_rgb: np.ndarray, prompt: Prompt, session_id: str | None = None
    ) -> PromptResult:
        """One image through the video engine as a one-frame session: it takes a slot for the
        duration of the call and leaves nothing behind. Raises CapacityError and the prompt's
        errors."""

        def stored_image(directory: Path) -> tuple[VideoInfo, FrameReader]:
            info = write_image(image_rgb, directory / IMAGE_FILE)
            return info, ImageReader(directory / IMAGE_FILE)

        def click(session: EngineSession) -> PromptResult:
            return session.add_prompt(prompt, last=True)

        return self._scratch_session(session_id or new_session_id(), stored_image, click)

    def _scratch_session(
        self,
        session_id: str,
        open_frames: Callable[[Path], tuple[VideoInfo, FrameReader]],
        work: Callable[[EngineSession], T],
    ) -> T:
        """``work`` on a session that takes a slot for its duration and leaves nothing behind;
        ``open_frames`` makes its frames, given its (new) directory."""
        self._reserve(session_id)
        directory = self.settings.storage_root / session_id
        try:
            directory.mkdir(parents=True, exist_ok=True)
            info, reader = open_frames(directory)
            frames = FrameSource(reader, reader, self.predictor.image_size)
            session = self._new_session(session_id, directory, info, frames, scratch=True)
            try:
                return work(session)
            finally:
                session.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            self._release(session_id)
            release_free_memory()  # as for a deleted session: its state goes back to the OS

    def open_session(self, session_id: str) -> EngineSession:
        """Reopen a session from its directory (video.json, index.npz, masks on the shared
        storage), e.g. after the replica that held it died: the same frames of the same source.
        NotFoundError if its files are gone; SourceChangedError if its server-side video
        changed or went away; CapacityError when every slot is taken."""
        self._reserve(session_id)
        directory = self.settings.storage_root / session_id
        try:
            stored = load_video(directory, self.objects)
            session = self._open_video(session_id, directory, stored)
        except FileNotFoundError:
            self._release(session_id)
            raise NotFoundError(f"the files of session {session_id} are gone") from None
        except BaseException:
            self._release(session_id)
            raise
        with self._lock:
            self._creating.discard(session_id)
            self._sessions[session_id] = session
        return session

    def forget_session(self, session_id: str) -> None:
        """Free a session's model state but keep its files (it is being rebuilt elsewhere)."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()
            release_free_memory()

    def session(self, session_id: str) -> EngineSession:
        """The open session; NotFoundError otherwise."""
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFoundError(f"session {session_id} not found", session_id=session_id)
        return session

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            sessions = list(self._sessions.values())
        return [s.info() for s in sessions]

    def delete_session(self, session_id: str) -> None:
        """Free a session's model state and masks; its directory goes too, with a moved upload
        (a server-side video is outside it and stays)."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFoundError(f"session {session_id} not found", session_id=session_id)
        try:
            session.close()
            session.masks.drop()  # in the database, the rows are not in the directory
        finally:
            shutil.rmtree(session.directory, ignore_errors=True)
            # Its frames and tensors were freed into malloc's arenas: give them back to the OS
            # (host_memory; measured in docs/benchmarks.md, "Memory comes back").
            release_free_memory()

    def close(self) -> None:
        """Delete every session (files too) and stop the model thread."""
        for session_id in list(self._sessions):
            self.delete_session(session_id)
        self.executor.close()
        self.mask_stores.close()

    def shutdown(self) -> None:
        """Free every session's memory but keep its files, so another replica can rebuild it,
        and stop the model thread (a replica going away: downscale, redeploy)."""
        for session_id in list(self._sessions):
            self.forget_session(session_id)
        self.executor.close()
        self.mask_stores.close()

    def _open_video(self, session_id: str, directory: Path, video: SessionVideo) -> EngineSession:
        """A session over a stored video, new or reopened: the same frames of the same source
        either way (docs/architecture.md, "The model always reads the source")."""
        return self._new_session(session_id, directory, video.info, self._frames(video))

    def _frames(self, video: SessionVideo) -> FrameSource:
        """The session's frames, both from its source: the model's reader decodes straight to
        S x S, the frame-space reader (overlays, exports, frame JPEGs) gets a quarter of the
        buffer."""
        size = self.predictor.image_size
        buffer_bytes = self.settings.frame_buffer_mb * 2**20
        model_frames = video.reader(buffer_bytes, size=(size, size))
        try:
            frames = video.reader(buffer_bytes // 4)
        except BaseException:
            model_frames.close()
            raise
        return FrameSource(model_frames, frames, size)

    def _new_session(
        self,
        session_id: str,
        directory: Path,
        info: VideoInfo,
        frames: FrameSource,
        *,
        scratch: bool = False,
    ) -> EngineSession:
        """A session over ``frames``, its masks where ``MaskStores`` puts them (a scratch
        session's in its directory, removed with it)."""
        masks = None
        try:
            masks = self.mask_stores.open(session_id, directory, scratch=scratch)
            return EngineSession(
                session_id,
                directory,
                info,
                self.model_name,
                self.predictor,
                self.executor,
                frames,
                masks,
                max_objects=self.settings.max_objects,
                match_iou=self.settings.concept_match_iou,
                offload_state_to_cpu=self.settings.offload_state_to_cpu,
                feature_cache_bytes=self.settings.feature_cache_mb * 2**20,
                retention_bytes=int(self.settings.retention_mb * 2**20),
                overlay_alpha=self.settings.overlay_alpha,
            )
        except BaseException:
            if masks is not None:
                masks.close()
            frames.close()
            raise

    def _reserve(self, session_id: str) -> None:
        with self._lock:
            if session_id in self._sessions or session_id in self._creating:
                raise ConflictError(f"session {session_id} already exists")
            if len(self._sessions) + len(self._creating) >= self.settings.max_sessions:
                raise CapacityError(
                    f"all {self.settings.max_sessions} session slots are taken",
                    max_sessions=self.settings.max_sessions,
                )
            self._creating.add(session_id)

    def _release(self, session_id: str) -> None:
        with self._lock:
            self._creating.discard(session_id)


def _blank_clip(directory: Path) -> tuple[VideoInfo, FrameReader]:
    clip = compilation.BlankClip()
    return clip.info, clip


def _click_and_propagate(session: EngineSession) -> None:
    """One object clicked on frame 0 with 1, 2, then ``WARMUP_POINTS`` points, and propagated
    through the clip twice: the per-frame steps at every memory count a long propagation
    reaches. Twice, because SAM 2's RoPE attention resizes a buffer on its first call, so the
    first frame of the first propagation compiles for a state no later one has (measured:
    without it, a user's first propagation recompiled the memory attention)."""
    side = session.video.width
    for k in range(1, compilation.WARMUP_POINTS + 1):
        point = (side * k / (compilation.WARMUP_POINTS + 1), side / 2)
        session.add_prompt(Prompt(frame_index=0, obj_id=1, points=[point]))
    for _ in range(2):
        for _ in session.propagate(PropagationRequest(direction="forward")):
            pass

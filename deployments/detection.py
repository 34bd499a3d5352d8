"""The concept detector as a SAM 2 replica reaches it: the ``ConceptDetector`` deployment's
Serve handle (model composition), called by ``DetectorApi`` method names within a time budget.

A replica sends the frame it already decoded, in frame space. Its errors come back as the
project's: the detector's own (an invalid prompt: 422) unwrapped from Ray's wrapper, a detector
replica that died or cannot be reached as ``DetectorLostError`` (503: nothing of the session
changed, so the request can be sent again), a detection past its budget as
``DeadlineExceededError``. None of them is ``SessionUnavailableError``: a lost detector never
makes the ingress rebuild the session.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NoReturn

import numpy as np
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments.engine import EngineSession
from deployments.engine.concepts import Detect
from deployments.protocol import (
    DeadlineExceededError,
    DetectorApi,
    DetectorLostError,
    FrameOutOfRangeError,
)
from deployments.protocol.concepts import ConceptQuery, DetectedInstance, TextPrompt
from deployments.protocol.detector_api import in_pixels, not_configured
from deployments.protocol.types import Redetect

_DETECT = DetectorApi.detect.__name__


def detector_input(session: EngineSession, prompt: TextPrompt) -> tuple[np.ndarray, ConceptQuery]:
    """What the detector is sent for a text prompt: the session's frame, decoded from its
    source at the frame size (not SAM 2's square input), and the query with its exemplar
    boxes in that frame's pixels. Blocks (decodes): an engine-call thread."""
    video = session.video
    if not 0 <= prompt.frame_index < video.num_frames:
        raise FrameOutOfRangeError(
            f"frame_index {prompt.frame_index} is outside the video (0..{video.num_frames - 1})",
            frame_index=prompt.frame_index,
            num_frames=video.num_frames,
        )
    query = prompt.query
    if prompt.normalized:
        query = in_pixels(query, video.width, video.height)
    return session.frames.read_rgb(prompt.frame_index), query


class Detector:
    """The detector deployment behind its handle; ``handle`` None: none is configured, and
    every call raises ``DetectorUnavailableError``."""

    def __init__(self, handle: DeploymentHandle | None, timeout_s: float) -> None:
        self._handle = handle
        self._timeout_s = timeout_s

    def require(self) -> None:
        """DetectorUnavailableError unless a detector is configured."""
        if self._handle is None:
            raise not_configured()

    async def detect(self, frame: np.ndarray, query: ConceptQuery) -> list[DetectedInstance]:
        """``DetectorApi.detect``, awaited on the replica's event loop."""
        response = self._send(frame, query)
        try:
            return await _within(response, self._timeout_s)
        except Exception as exc:
            _raise_project_error(exc, self._timeout_s)

    def redetector(self, redetect: Redetect | None) -> Detect | None:
        """The callback a propagation re-detects with, or None when it asks for none;
        DetectorUnavailableError where it asks and no detector is configured."""
        if redetect is None:
            return None
        self.require()
        query = ConceptQuery(text=redetect.text)
        return lambda _frame_index, frame: self.detect_blocking(frame, query)

    def detect_blocking(self, frame: np.ndarray, query: ConceptQuery) -> list[DetectedInstance]:
        """``DetectorApi.detect`` from an engine-call thread (re-detection inside a
        propagation, whose steps run there); never from the event loop."""
        response = self._send(frame, query)
        try:
            return response.result(timeout_s=self._timeout_s)
        except Exception as exc:
            _raise_project_error(exc, self._timeout_s)

    def _send(self, frame: np.ndarray, query: ConceptQuery) -> DeploymentResponse:
        self.require()
        assert self._handle is not None
        return self._handle.options(method_name=_DETECT).remote(frame=frame, query=query)


async def _within(response: DeploymentResponse, timeout_s: float) -> Any:
    try:
        return await asyncio.wait_for(response, timeout_s)
    except TimeoutError:
        response.cancel()
        raise


def _raise_project_error(raised: Exception, timeout_s: float) -> NoReturn:
    """Raise the project's error for what a detector call raised."""
    error = raised
    if isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    if isinstance(error, RayActorError):
        error = DetectorLostError(
            "the concept detector's replica stopped while answering; nothing was changed, "
            "send the request again"
        )
    elif isinstance(error, TimeoutError | FutureTimeout):
        error = DeadlineExceededError(
            f"the concept detector took longer than its {timeout_s:g}s budget", budget_s=timeout_s
        )
    if error is raised:
        raise raised
    raise error from raised

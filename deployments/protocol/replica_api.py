"""``ReplicaApi``: every method the ingress calls on a SAM 2 replica, typed.

``deployments.replica.SAM2Replica`` implements it (a test compares the signatures), and the
ingress calls the replicas through ``ingress.replica_calls``, a view of their Serve handle typed
as this Protocol: a call that does not match is a type error at the call site. Ray addresses a
replica method by its name; those names come from here (``ReplicaApi.add_prompt.__name__``),
never from string literals.

Session-scoped methods take ``session_id`` and ``owner``, the replica id the ingress read from
the session store: the session router sends the call to that replica only, and the replica
refuses one that reached another (``SessionUnavailableError``). Every argument is keyword-only,
because the router reads ``session_id`` and ``owner`` by name.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, Protocol

from deployments.protocol.concepts import PropagationStreamEvent, TextPrompt, TextPromptResult
from deployments.protocol.types import (
    ClearResult,
    ExportFormat,
    MaskPage,
    ObjectInfo,
    ObjectTimeline,
    Prompt,
    PromptResult,
    PropagationRequest,
    ReviewItem,
    SessionInfo,
    VideoOptions,
)

# An object's (name, category), by object id: what the store keeps for a rebuilt session.
ObjectNames = dict[int, tuple[str | None, str | None]]


class ReplicaApi(Protocol):
    """A SAM 2 replica as the ingress sees it. Every method is a coroutine but ``propagate``,
    which streams."""

    # ---- sessions ----------------------------------------------------------------------------

    async def create_session(
        self, *, session_id: str, video: str, options: VideoOptions, is_upload: bool
    ) -> tuple[SessionInfo, str]:
        """A new session over ``video`` (a file on the shared storage, or an ``s3://`` URL); its
        info and the id of the replica that holds it."""
        ...

    async def rebuild_session(
        self, *, session_id: str, log: list[dict[str, Any]], names: ObjectNames
    ) -> str:
        """Rebuild a session whose replica is gone from its directory and prompt log; the id of
        the replica that holds it now."""
        ...

    async def settle_session(self, *, session_id: str, owner: str) -> bool:
        """Free ``owner``'s copy of a session its caller gave up on; whether one was freed."""
        ...

    async def session_info(self, *, session_id: str, owner: str) -> SessionInfo: ...

    async def delete_session(self, *, session_id: str, owner: str) -> None: ...

    async def reset(self, *, session_id: str, owner: str) -> SessionInfo: ...

    async def frame_jpeg(self, *, session_id: str, owner: str, frame_index: int) -> bytes: ...

    # ---- objects and prompts -----------------------------------------------------------------

    async def add_prompt(self, *, session_id: str, owner: str, prompt: Prompt) -> PromptResult: ...

    async def add_text_prompt(
        self, *, session_id: str, owner: str, prompt: TextPrompt
    ) -> TextPromptResult:
        """Detect the text on its frame (the replica sends the concept detector the frame it
        decodes) and make each instance that matches no object of that category a new one."""
        ...

    async def clear_prompts(
        self, *, session_id: str, owner: str, frame_index: int, obj_id: int | None
    ) -> ClearResult: ...

    async def objects(self, *, session_id: str, owner: str) -> list[ObjectInfo]: ...

    async def update_object(
        self, *, session_id: str, owner: str, obj_id: int, name: str | None, category: str | None
    ) -> ObjectInfo: ...

    async def remove_object(self, *, session_id: str, owner: str, obj_id: int) -> None: ...

    # ---- propagation and masks ---------------------------------------------------------------

    def propagate(
        self, *, session_id: str, owner: str, request: PropagationRequest
    ) -> AsyncIterator[PropagationStreamEvent]:
        """One event per frame (with ``redetect``, an ``ObjectAdded`` before the frame for each
        object re-detection started there), then the summary; closing the stream stops the
        propagation."""
        ...

    async def cancel_propagation(self, *, session_id: str, owner: str) -> bool: ...

    async def masks(
        self,
        *,
        session_id: str,
        owner: str,
        start: int | None,
        end: int | None,
        obj_id: int | None,
        limit: int,
    ) -> MaskPage: ...

    # ---- exports, review, one-shot work ------------------------------------------------------

    async def export(
        self, *, session_id: str, owner: str, fmt: ExportFormat, obj_id: int | None
    ) -> str:
        """The export's spool file on the shared storage, for the ingress to stream and
        remove."""
        ...

    async def overlay_jpeg(self, *, session_id: str, owner: str, frame_index: int) -> bytes: ...

    async def timeline(
        self,
        *,
        session_id: str,
        owner: str,
        obj_id: int,
        score_threshold: float,
        iou_threshold: float,
    ) -> ObjectTimeline: ...

    async def review(
        self, *, session_id: str, owner: str, score_threshold: float, iou_threshold: float
    ) -> list[ReviewItem]: ...

    async def segment_image(
        self, *, session_id: str, image: bytes, prompt: Prompt
    ) -> tuple[PromptResult, int, int, float]:
        """(result, width, height, inference ms) of one image, as a one-frame session."""
        ...

    async def track(self, *, session_id: str, video: str, prompt: Prompt) -> str:
        """``/track``'s ZIP (one PNG mask per frame) of ``video``; its spool file."""
        ...

    # ---- service -----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The replica's stats: what it publishes to the session router."""
        ...


# Every method's name, for whatever addresses the replica by name.
METHODS = frozenset(
    name
    for name, _ in inspect.getmembers(ReplicaApi, inspect.isfunction)
    if not name.startswith("_")
)
# Calls that answer with a stream of results.
STREAMING_METHODS = frozenset({ReplicaApi.propagate.__name__})
# Calls that take a session slot on whichever replica has the most free ones (the router places
# them; every other session-scoped call goes to its ``owner``).
PLACEMENT_METHODS = frozenset(
    method.__name__
    for method in (
        ReplicaApi.create_session,
        ReplicaApi.rebuild_session,
        ReplicaApi.segment_image,
        ReplicaApi.track,
    )
)

"""Text prompts (CONTRACT.md, wave 3) between the routes, the SAM 2 replicas and the concept
detector.

A text prompt on a session goes to the session's owner, which sends its decoded frame to the
detector and adds the new instances as objects; their names and categories are kept in the
session store here, as ``PATCH .../objects`` keeps them, so a rebuilt session has them too.
Text on an image goes to the detector itself (it decodes the image), alongside SAM 2 when the
request also has points or a box. Without the ``detector`` setting every text is refused with
409 ``detector_unavailable``, before any replica is called.
"""

from __future__ import annotations

import asyncio

from ray.serve.handle import DeploymentHandle

from deployments.protocol import (
    InvalidPromptError,
    Prompt,
    PromptResult,
    ServiceSettings,
    new_session_id,
)
from deployments.protocol.concepts import (
    ConceptQuery,
    DetectedInstance,
    ObjectAdded,
    TextPrompt,
    TextPromptResult,
)
from deployments.protocol.detector_api import not_configured
from ingress.ownership import Ownership
from ingress.replica_calls import detector_api
from ingress.schemas import ImageSegmentation
from session_store import ObjectRecord, SessionRecord


class Concepts:
    """Text prompts for one service; ``detector`` None: none is configured."""

    def __init__(
        self, ownership: Ownership, settings: ServiceSettings, detector: DeploymentHandle | None
    ) -> None:
        self.ownership = ownership
        self.settings = settings
        self.detector = detector

    def check(self, text: str) -> None:
        """409 ``detector_unavailable`` without a detector; 422 for a text longer than the
        detector reads (``DetectorSettings.max_text_chars``)."""
        if self.detector is None or self.settings.detector is None:
            raise not_configured()
        limit = self.settings.detector.max_text_chars
        if len(text) > limit:
            raise InvalidPromptError(
                f"the text prompt is longer than {limit} characters", field="text", max_chars=limit
            )

    async def add_text_prompt(self, record: SessionRecord, prompt: TextPrompt) -> TextPromptResult:
        """Applied and logged by the owner; the new objects' names are kept here."""
        self.check(prompt.query.text)
        session_id = record.session_id
        result = await self.ownership.call(
            record,
            lambda api, owner: api.add_text_prompt(
                session_id=session_id, owner=owner, prompt=prompt
            ),
        )
        for added in (o for o in result.objects if not o.matched):
            await self.ownership.store.put_object(
                session_id,
                ObjectRecord(obj_id=added.obj_id, name=added.name, category=added.category),
            )
        return result

    async def object_added(self, session_id: str, event: ObjectAdded) -> None:
        """Keep the name of an object that re-detection started during a propagation."""
        await self.ownership.store.put_object(
            session_id, ObjectRecord(obj_id=event.obj_id, name=event.name, category=event.category)
        )

    async def segment_image(
        self, image: bytes, prompt: Prompt | None, query: ConceptQuery | None, normalized: bool
    ) -> ImageSegmentation:
        """SAM 2's masks for ``prompt`` and the detector's instances of ``query``, computed at
        once on their own replicas; ``inference_ms`` is the longer of the two."""
        if query is not None:
            self.check(query.text)
        masks: asyncio.Task[tuple[PromptResult, int, int, float]] | None = None
        if prompt is not None:
            masks = asyncio.create_task(
                self.ownership.replica_api().segment_image(
                    session_id=new_session_id(), image=image, prompt=prompt
                )
            )
        try:
            found = await self._detect_image(image, query, normalized)
            segmented = await masks if masks is not None else None
        finally:
            if masks is not None and not masks.done():
                masks.cancel()
        if segmented is not None:
            result, width, height, elapsed_ms = segmented
            instances, _, _, detect_ms = found or ([], width, height, 0.0)
            return ImageSegmentation(
                masks=result.masks,
                width=width,
                height=height,
                inference_ms=max(elapsed_ms, detect_ms),
                instances=instances,
            )
        assert found is not None  # a request has points, a box or a text
        instances, width, height, detect_ms = found
        return ImageSegmentation(
            masks=[], width=width, height=height, inference_ms=detect_ms, instances=instances
        )

    async def _detect_image(
        self, image: bytes, query: ConceptQuery | None, normalized: bool
    ) -> tuple[list[DetectedInstance], int, int, float] | None:
        if query is None:
            return None
        assert self.detector is not None  # check() passed
        api = detector_api(self.detector, self.settings.request_timeout_s)
        return await api.detect_image(image=image, query=query, normalized=normalized)

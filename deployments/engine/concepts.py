"""Text (concept) prompts on a session: the instances a concept detector (SAM 3) found on a
frame, matched against the session's objects; each instance that matches none becomes a new
object, prompted with the instance's mask through the same path as any mask prompt
(``prompting.apply_prompt``, SAM 2's ``add_new_mask``). The oracle of a concept-created object
is stock SAM 2 given the same mask prompts. The detector runs before (the replica calls it);
this module never sees it.

- **Matching** (``match``): an instance matches an object when the IoU of their masks on the
  frame is at least the setting ``concept_match_iou``; pairs are taken one-to-one, greedily,
  highest IoU first. A text prompt compares with the objects whose ``category`` is the text
  (stripped, case-sensitive); re-detection, with every object. An object's mask on the frame is
  the one the user sees: the MaskStore's (during a propagation, the frame just computed). An
  object with no mask on the frame cannot match: a text prompt on a frame the objects were
  never tracked to creates them again, so prompt the text on frames the objects reach (after
  propagating). A matched instance is reported ``matched`` with that object and changes nothing.
- **New objects** (``find_objects``): in descending detector score, the next free ids, ``name``
  the text and an ordinal (after the highest of the category's existing ordinals and its
  number of objects), ``category`` the text.
- **The object limit.** A text prompt that would pass the session's ``max_objects`` is refused
  (``TooManyObjectsError``, 422 ``too_many_objects``) before anything is applied: nothing is
  half-added. Re-detection adds the highest-scoring new instances up to the limit and logs a
  warning for the rest.
- **The prompt log.** An operation that added objects is one entry, ``{"op": "text_prompt",
  "frame_index", "text", "objects": [{"prompt": <the mask Prompt with its obj_id>, "name",
  "category"}]}``: a rebuild replays those mask prompts without the detector (``rebuild``) and
  takes the names from it where the session store has none (``object_names``). Matches alone
  change nothing and log nothing.
- ``exact``: the AND of the mask prompts' (SAM 2.1 takes a mask as the output and reads no
  memory, so it holds). ``masks``: every object on the frame afterwards.
- **Re-detection while propagating** (``PropagationRequest.redetect``; ``propagation``): on a
  pass's start frame and every ``every_n_frames``-th frame after it, once SAM 2 computed the
  frame, the caller's ``Detect`` gets the frame in frame space (the session's frame-space
  reader, not SAM 2's S x S input); instances are matched against every object's mask there,
  and the new ones are added as above at that frame (logged, the checkpoint naming the
  propagation under way), each announced by an ``ObjectAdded`` before the frame's masks.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

import deployments.engine.prompting as prompting
import deployments.engine.state as sam_state
from deployments.engine.frames import FrameSource
from deployments.engine.mask_store import MaskStore
from deployments.protocol.concepts import (
    ConceptObject,
    DetectedInstance,
    TextPrompt,
    TextPromptResult,
)
from deployments.protocol.errors import InvalidPromptError, TooManyObjectsError
from deployments.protocol.types import RLE, MaskSource, Prompt, VideoInfo

logger = logging.getLogger(__name__)
# Mask IoU at or above which an instance is the object it overlaps.
# The detector a propagation re-detects with: (frame index, the frame in frame space as RGB
# uint8 [H, W, 3]) -> the instances on it.
Detect = Callable[[int, np.ndarray], list[DetectedInstance]]
_MAX_OBJ_ID = 255  # ObjectId's bound


@dataclass
class ObjectMeta:
    """What the session knows of an object beyond SAM 2: its name and category (a text
    prompt's objects get both)."""

    name: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class NewObject:
    """An instance that matched no object: the object it becomes and its mask prompt."""

    prompt: Prompt
    name: str
    category: str
    score: float

    @property
    def obj_id(self) -> int:
        assert self.prompt.obj_id is not None
        return self.prompt.obj_id


@dataclass(frozen=True)
class Found:
    """A detection's outcome: each instance as the object it is or becomes, the new ones, and
    how many more would have been new past the object limit (left out of both)."""

    objects: list[ConceptObject]
    new: list[NewObject]
    left_out: int


@dataclass(frozen=True)
class Redetection:
    """A propagation's re-detection (``PropagationRequest.redetect``): the text, how often,
    the caller's detector and the matching threshold."""

    text: str
    every_n_frames: int
    detect: Detect
    match_iou: float

    def due(self, frame: int, start: int) -> bool:
        """Whether a pass that started at ``start`` detects on ``frame``: its start frame and
        every ``every_n_frames``-th frame after it."""
        return abs(frame - start) % self.every_n_frames == 0


def match(instances: list[RLE], objects: dict[int, RLE], threshold: float) -> dict[int, int]:
    """Instance index -> object id: one-to-one, greedy by mask IoU (highest first; ties to the
    earlier instance, then the lower id), pairs at or above ``threshold`` only."""
    if not instances or not objects:
        return {}
    ids = sorted(objects)
    ious = np.asarray(
        mask_utils.iou(
            [_coco(r) for r in instances], [_coco(objects[o]) for o in ids], [0] * len(ids)
        )
    ).reshape(len(instances), len(ids))
    pairs = sorted(
        ((-ious[i, j], i, j) for i, j in zip(*np.nonzero(ious >= threshold), strict=True)),
    )
    matched: dict[int, int] = {}
    for _, i, j in pairs:
        if i not in matched and ids[j] not in matched.values():
            matched[int(i)] = ids[j]
    return matched


def find_objects(
    frame: int,
    text: str,
    instances: list[DetectedInstance],
    candidates: dict[int, RLE],
    meta: dict[int, ObjectMeta],
    video: VideoInfo,
    threshold: float,
    room: int,
) -> Found:
    """Match ``instances`` (in descending score) against ``candidates`` (object id -> its mask
    on ``frame``), and name the rest, up to ``room`` of them, as new objects of category
    ``text`` with their mask prompts. InvalidPromptError for an instance mask not of the
    frame's size."""
    size = (video.height, video.width)
    for instance in instances:
        if tuple(instance.rle.size) != size:
            raise InvalidPromptError(
                f"instance mask size {list(instance.rle.size)} differs from the frame size "
                f"{list(size)}"
            )
    ordered = sorted(instances, key=lambda i: -i.score)
    matched = match([i.rle for i in ordered], candidates, threshold)
    ids, ordinals = _free_ids(set(meta)), _ordinals(text, meta)
    objects: list[ConceptObject] = []
    new: list[NewObject] = []
    for i, instance in enumerate(ordered):
        if i in matched:
            obj_id = matched[i]
            objects.append(_reported(obj_id, meta[obj_id], instance.score, matched=True))
            continue
        if len(new) == room:
            continue
        obj_id, name = next(ids), f"{text} {next(ordinals)}"
        prompt = Prompt(frame_index=frame, obj_id=obj_id, mask=instance.rle)
        new.append(NewObject(prompt, name, text, instance.score))
        objects.append(_reported(obj_id, ObjectMeta(name, text), instance.score, matched=False))
    return Found(objects, new, len(ordered) - len(matched) - len(new))


def log_entry(frame: int, text: str, new: list[NewObject]) -> dict[str, Any]:
    """The prompt-log entry of objects a text prompt or a re-detection added."""
    return {
        "op": "text_prompt",
        "frame_index": frame,
        "text": text,
        "objects": [
            {"prompt": o.prompt.model_dump(mode="json"), "name": o.name, "category": o.category}
            for o in new
        ],
    }


def object_names(
    entries: list[dict[str, Any]], stored: dict[int, tuple[str | None, str | None]]
) -> dict[int, ObjectMeta]:
    """Names and categories for a rebuild: those the log's text prompts gave (``entries`` in
    order), each replaced by the session store's (``stored``) where it has one."""
    named: dict[int, ObjectMeta] = {}
    for entry in entries:
        if entry["op"] == "reset":
            named.clear()
        elif entry["op"] == "remove_object":
            named.pop(entry["obj_id"], None)
        elif entry["op"] == "text_prompt":
            for o in entry["objects"]:
                named[o["prompt"]["obj_id"]] = ObjectMeta(o["name"], o["category"])
    for obj_id, (name, category) in stored.items():
        meta = named.setdefault(obj_id, ObjectMeta())
        meta.name = meta.name if name is None else name
        meta.category = meta.category if category is None else category
    return named


class SessionConcepts:
    """Text prompts on a session (mixed into ``EngineSession``, whose state, lock, model thread
    and stores it uses as declared below); ``propagation`` re-detects through ``_redetected``
    and ``_add_found``."""

    id: str
    video: VideoInfo
    frames: FrameSource
    masks: MaskStore
    max_objects: int
    match_iou: float
    _predictor: Any
    _state: sam_state.State
    _meta: dict[int, ObjectMeta]
    _lock: threading.Lock
    _idle: Callable[[], Any]
    _check_frame: Callable[[int], None]
    _run: Callable[[Callable[[], Any]], Any]
    _submit: Callable[..., Any]
    _apply: Callable[[int, int, prompting.PromptInputs], prompting.Applied]
    _prompt_inputs: Callable[[Prompt], prompting.PromptInputs]
    _store_applied: Callable[[int, list[prompting.Applied], MaskSource], None]
    _log: Callable[..., None]

    def add_text_prompt(
        self,
        prompt: TextPrompt,
        instances: list[DetectedInstance],
    ) -> TextPromptResult:
        """Make the instances a detector found on ``prompt.frame_index`` (frame space) this
        session's objects of the text's category, as the module docstring says: matched ones
        reported, the others added as mask prompts, logged as one entry.

        Raises FrameOutOfRangeError, InvalidPromptError (an instance mask not of the frame's
        size), TooManyObjectsError (more objects than ``max_objects``, before anything is
        added), ConflictError while a propagation runs.
        """
        frame, text = prompt.frame_index, prompt.query.text.strip()
        self._check_frame(frame)
        with self._idle():
            candidates = {
                m.obj_id: m.rle
                for m in self.masks.frame(frame)
                if m.obj_id in self._meta and self._meta[m.obj_id].category == text
            }
            room = self.max_objects - len(self._meta)
            found = find_objects(
                frame, text, instances, candidates, self._meta, self.video, self.match_iou, room
            )
            if found.left_out:
                new = len(found.new) + found.left_out
                raise TooManyObjectsError(
                    f"a session holds at most {self.max_objects} objects: {new} new instances "
                    f"of {text!r} do not fit beside the {len(self._meta)} it has",
                    max_objects=self.max_objects,
                    objects=len(self._meta),
                    new_instances=new,
                )
            applied = self._add_found(frame, found.new)
            if applied:
                # As after a mask prompt: the memories encoded ahead of the next propagation.
                self._submit(
                    lambda: sam_state.encode_pending_memories(self._predictor, self._state)
                )
                self._store_applied(frame, applied, "prompt")
                self._log(log_entry(frame, text, found.new))
        return TextPromptResult(
            frame_index=frame,
            objects=found.objects,
            masks=self.masks.frame(frame),
            exact=all(a.exact for a in applied),
        )

    def _redetected(
        self, frame: int, computed: dict[int, RLE], redetection: Redetection
    ) -> list[NewObject]:
        """Detect on a frame a propagation just computed and keep what matches no object
        (``computed``, the propagated objects' masks, and the others' stored ones): at most
        what the object limit leaves room for, the rest logged. The detector runs outside the
        session's lock."""
        instances = redetection.detect(frame, self.frames.read_rgb(frame))
        text = redetection.text.strip()
        stored = {m.obj_id: m.rle for m in self.masks.frame(frame)}
        with self._lock:
            candidates = {o: rle for o, rle in (stored | computed).items() if o in self._meta}
            room = self.max_objects - len(self._meta)
            found = find_objects(
                frame,
                text,
                instances,
                candidates,
                self._meta,
                self.video,
                redetection.match_iou,
                room,
            )
        if found.left_out:
            logger.warning(
                "session %s: re-detection found %d new instances of %r on frame %d; the "
                "%d-object limit leaves room for %d, the rest are not added",
                self.id,
                len(found.new) + found.left_out,
                text,
                frame,
                self.max_objects,
                room,
            )
        return found.new

    def _add_found(self, frame: int, new: list[NewObject]) -> list[prompting.Applied]:
        """Apply the new objects' mask prompts (validated first, so a bad one adds nothing) and
        name them; the caller stores and logs (the session's lock held)."""
        inputs = [self._prompt_inputs(o.prompt) for o in new]
        applied = [
            self._run(lambda o=o, i=i: self._apply(frame, o.obj_id, i))
            for o, i in zip(new, inputs, strict=True)
        ]
        for o in new:
            self._meta[o.obj_id] = ObjectMeta(o.name, o.category)
        return applied


def _reported(obj_id: int, meta: ObjectMeta, score: float, matched: bool) -> ConceptObject:
    return ConceptObject(
        obj_id=obj_id,
        name=meta.name,
        category=meta.category,
        detector_score=score,
        matched=matched,
    )


def _free_ids(used: set[int]) -> Iterator[int]:
    """Ids not in use: after the highest, then (past 255) the gaps below it. The object limit
    (at most 255) leaves one for every new object."""
    top = max(used, default=0)
    yield from range(top + 1, _MAX_OBJ_ID + 1)
    yield from (i for i in range(1, top) if i not in used)


def _ordinals(text: str, meta: dict[int, ObjectMeta]) -> Iterator[int]:
    """Ordinals for the category's new objects: after the highest one its names carry (``text
    N``) and after its number of objects."""
    pattern = re.compile(rf"{re.escape(text)} (\d+)")
    same = [m for m in meta.values() if m.category == text]
    numbers = [int(hit.group(1)) for m in same if m.name and (hit := pattern.fullmatch(m.name))]
    n = max([len(same), *numbers])
    while True:
        n += 1
        yield n


def _coco(rle: RLE) -> dict:
    return {"size": list(rle.size), "counts": rle.counts.encode("ascii")}

"""Stock SAM 2 as the oracle of the engine's masks, and a runner that drives a session and the
oracle with the same operations and compares every mask an operation computes, bit for bit.

``StockPredictor`` is sam2 1.1.0's ``SAM2VideoPredictor`` with only the fp32 fix the engine's
predictor carries: upstream stores memory features in bf16, which crashes an fp32 propagation;
the fix casts them back to float32 once stored. Nothing else differs from stock: every output
kept for the whole video, prompts consolidated only when a propagation starts. (Its image
features come from ``EncodedFrames``, each frame's computed once with stock's own call: the
tensors stock computes again whenever it needs a frame it no longer caches.)

``StockOracle`` runs it on a session's own model-input frames (``session.frames``), so both read
the same tensors, and maps each engine operation onto the stock calls SAM 2's own demo makes.
``Differential`` applies one operation to both and records what it compared: where the engine
reports a result exact, its masks must be stock's, bit for bit.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
import torch
from sam2 import sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor

from deployments.engine.mask_store import decode_mask
from deployments.protocol.types import FrameMasks, Prompt, PropagationDone, PropagationRequest

SAM21_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# SAM 2's per-object containers of an inference state, keyed by its object index.
PER_OBJECT = (
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "output_dict_per_obj",
    "temp_output_dict_per_obj",
    "frames_tracked_per_obj",
)


class StockPredictor(SAM2VideoPredictor):
    """Stock ``SAM2VideoPredictor`` plus the fp32 fix alone: the memory features SAM 2 stores
    (cast to bf16 upstream) are cast to float32 after it stored them."""

    def _run_single_frame_inference(self, *args: Any, **kwargs: Any) -> tuple[dict, Any]:
        current_out, pred_masks = super()._run_single_frame_inference(*args, **kwargs)
        if current_out["maskmem_features"] is not None:
            current_out["maskmem_features"] = current_out["maskmem_features"].float()
        return current_out, pred_masks

    def _run_memory_encoder(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        features, pos_enc = super()._run_memory_encoder(*args, **kwargs)
        return features.float(), pos_enc


def build_stock(weights_of: torch.nn.Module, config: str = SAM21_TINY_CONFIG) -> StockPredictor:
    """A ``StockPredictor`` from sam2's own config, with the serving engine's one config
    override (a correction click becomes a conditioning frame, as in Meta's demo), at the
    engine model's image size, holding its weights; CPU, eval mode, float32."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [
        "++model.add_all_frames_to_correct_as_cond=true",
        f"++model.image_size={weights_of.image_size}",
        f"++model._target_={StockPredictor.__module__}.{StockPredictor.__qualname__}",
    ]
    model = build_sam2_video_predictor(config, None, device="cpu", hydra_overrides_extra=overrides)
    assert type(model) is StockPredictor
    model.load_state_dict(weights_of.state_dict())
    return model.float().eval()


@dataclass(frozen=True)
class Clear:
    """``EngineSession.clear_prompts``: one object's prompts on a frame, or all (None)."""

    frame_index: int
    obj_id: int | None = None


@dataclass(frozen=True)
class Remove:
    """``EngineSession.remove_object``."""

    obj_id: int


@dataclass(frozen=True)
class Reset:
    """``EngineSession.reset``."""


Operation = Prompt | PropagationRequest | Clear | Remove | Reset
Masks = dict[int, np.ndarray]  # bool [H, W] per object id


class EncodedFrames(dict):
    """Stock's ``cached_features`` holding every frame of a clip once computed, shared by the
    oracles of that clip. Stock keeps the last frame it encoded and encodes any other again,
    with the same call on the same tensor (``forward_image`` of the frame, batch 1), so the
    features it gets here are the ones it would compute, bit for bit; the oracle is just spared
    running the image encoder on every frame of every sequence again. A lookup never misses, so
    stock never replaces this dict with its one-frame one."""

    def __init__(self, model: StockPredictor, frames: torch.Tensor) -> None:
        super().__init__()
        self.model, self.frames = model, frames

    def get(self, frame_idx: int, default: Any = None) -> tuple[torch.Tensor, dict]:
        if frame_idx not in self:
            with torch.inference_mode():
                image = self.frames[frame_idx].float().unsqueeze(0)
                self[frame_idx] = (image, self.model.forward_image(image))
        return self[frame_idx]


class StockOracle:
    """Stock SAM 2 on one video: an inference state over given model-input frames, and one
    method per engine operation returning the masks stock computes (bool, video size)."""

    def __init__(
        self,
        model: StockPredictor,
        frames: torch.Tensor,
        height: int,
        width: int,
        encoded: EncodedFrames | None = None,
    ) -> None:
        """``frames``: ``[N, 3, S, S]``, what the engine feeds the model (SAM 2's
        ``load_video_frames`` hands ``init_state`` these instead of reading a file).
        ``encoded``: the clip's features so far, if other oracles ran on these frames."""
        self.model = model
        if encoded is None:
            encoded = EncodedFrames(model, frames)
        assert encoded.model is model and torch.equal(encoded.frames, frames)

        def load_video_frames(**_: Any) -> tuple[torch.Tensor, int, int]:
            return frames, height, width

        with mock.patch.object(sam2_video_predictor, "load_video_frames", load_video_frames):
            self.state = model.init_state(video_path="<session frames>", offload_video_to_cpu=True)
        self.state["cached_features"] = encoded

    # ---- what stock holds ------------------------------------------------------------------

    def objects(self) -> list[int]:
        return list(self.state["obj_ids"])

    def prompt_frames(self, obj_id: int) -> list[int]:
        idx = self.state["obj_id_to_idx"].get(obj_id)
        if idx is None:
            return []
        return sorted(
            {*self.state["point_inputs_per_obj"][idx], *self.state["mask_inputs_per_obj"][idx]}
        )

    def prompted_objects(self) -> list[int]:
        return [obj_id for obj_id in self.objects() if self.prompt_frames(obj_id)]

    def refuses_clicks(self, obj_id: int | None, frame_index: int) -> bool:
        """Whether stock fails a click or box there: on a frame it tracked the object to, a click
        corrects the tracked mask from the object's memories, and stock asserts that a
        consolidated conditioning frame is among them (``_prepare_memory_conditioned_features``)
        while every prompt of the object was cleared since, or is not consolidated yet. Stock
        defines no masks there to compare with. (A mask prompt reads no memory.)"""
        idx = self.state["obj_id_to_idx"].get(obj_id)
        if idx is None or frame_index not in self.state["frames_tracked_per_obj"][idx]:
            return False
        return not self.state["output_dict_per_obj"][idx]["cond_frame_outputs"]

    # ---- operations ------------------------------------------------------------------------

    def prompt(self, prompt: Prompt, obj_id: int) -> Masks:
        """``add_new_mask`` (if a mask), then ``add_new_points_or_box`` (points and box as
        given: in pixels, or in 0..1 with ``normalize_coords=False``; a box clears the old
        points, as stock requires). Every object stock reports on the frame."""
        frame, result = prompt.frame_index, None
        if prompt.mask is not None:
            result = self.model.add_new_mask(self.state, frame, obj_id, decode_mask(prompt.mask))
        if prompt.points or prompt.box is not None:
            points = labels = box = None
            if prompt.points:
                points = np.asarray(prompt.points, dtype=np.float32)
                labels = np.asarray(prompt.labels or [1] * len(points), dtype=np.int32)
            if prompt.box is not None:
                box = np.asarray(prompt.box, dtype=np.float32)
            result = self.model.add_new_points_or_box(
                self.state,
                frame,
                obj_id,
                points=points,
                labels=labels,
                clear_old_points=prompt.clear_old_points or box is not None,
                normalize_coords=not prompt.normalized,
                box=box,
            )
        assert result is not None, "a prompt without points, box or mask"
        _, obj_ids, video_res_masks = result
        return _by_object(obj_ids, video_res_masks)

    def clear(self, frame_index: int, obj_id: int | None) -> Masks:
        """``clear_all_prompts_in_frame`` for each object (all for None) with prompts on the
        frame; each cleared object's mask as stock reports it right after its clear (its
        downgraded output, or all-False where stock holds none: NO_OBJ_SCORE logits)."""
        candidates = self.objects() if obj_id is None else [obj_id]
        cleared: Masks = {}
        for target in candidates:
            if frame_index in self.prompt_frames(target):
                _, obj_ids, video_res_masks = self.model.clear_all_prompts_in_frame(
                    self.state, frame_index, target, need_output=True
                )
                cleared[target] = _by_object(obj_ids, video_res_masks)[target]
        return cleared

    def remove(self, obj_id: int) -> None:
        self.model.remove_object(self.state, obj_id, need_output=False)

    def reset(self) -> None:
        self.model.reset_state(self.state)

    def propagate(self, request: PropagationRequest) -> list[tuple[int, Masks]]:
        """Stock's ``propagate_in_video`` per pass (``both``: forward, then reverse, as SAM 2's
        demo does), each frame's masks of the propagated objects, in the order the engine
        reports them: for ``both`` the start frame once, the forward pass's.

        Stock propagates every object at once; a subset (``obj_ids``, or the objects that still
        have a prompt) is oracled by a propagation of all objects in which the others are left
        as they were. SAM 2.1 tracks each object alone (its own per-object containers, batch 1,
        no cross-object term: ``non_overlap_masks`` is off), so the propagated objects' masks
        and state are those of a stock propagation; the others' per-object containers are
        deep-copied before and restored after, so their state is what it was (prompts not
        consolidated, outputs and tracked frames untouched). One that has no prompt left,
        which stock refuses to propagate ("No input points or masks are provided"), gets a
        stand-in conditioning output for the passes (a copy of a propagated object's), its
        results discarded with the rest of its state.
        """
        obj_ids = request.obj_ids if request.obj_ids is not None else self.prompted_objects()
        assert obj_ids, "nothing to propagate"
        others = [o for o in self.objects() if o not in obj_ids]
        start = request.start_frame_index
        if start is None and others:  # stock's default over the propagated objects only
            start = min(f for o in obj_ids for f in self.prompt_frames(o))
        reverses = {"forward": (False,), "backward": (True,), "both": (False, True)}
        saved = self._save(others)
        self._stand_in([o for o in others if not self.prompt_frames(o)], obj_ids[0])
        try:
            frames: list[tuple[int, Masks]] = []
            for n, reverse in enumerate(reverses[request.direction]):
                walk = self.model.propagate_in_video(
                    self.state,
                    start_frame_idx=start,
                    max_frame_num_to_track=request.max_frames,
                    reverse=reverse,
                )
                for i, (frame, ids, video_res_masks) in enumerate(walk):
                    if n > 0 and i == 0:
                        continue  # the start frame, reported by the forward pass
                    masks = _by_object(ids, video_res_masks)
                    frames.append((frame, {o: masks[o] for o in obj_ids}))
            return frames
        finally:
            self._restore(saved)

    def _save(self, obj_ids: list[int]) -> dict[str, dict[int, Any]]:
        indices = [self.state["obj_id_to_idx"][o] for o in obj_ids]
        return {key: {i: copy.deepcopy(self.state[key][i]) for i in indices} for key in PER_OBJECT}

    def _restore(self, saved: dict[str, dict[int, Any]]) -> None:
        for key, per_object in saved.items():
            self.state[key].update(per_object)

    def _stand_in(self, unprompted: list[int], donor: int) -> None:
        """Give each unprompted object a copy of ``donor``'s first conditioning output, as a
        prompt not yet consolidated (the preflight encodes its memory if missing)."""
        if not unprompted:
            return
        d = self.state["obj_id_to_idx"][donor]
        frame = self.prompt_frames(donor)[0]
        out = self.state["temp_output_dict_per_obj"][d]["cond_frame_outputs"].get(frame)
        if out is None:
            out = self.state["output_dict_per_obj"][d]["cond_frame_outputs"][frame]
        for obj_id in unprompted:
            idx = self.state["obj_id_to_idx"][obj_id]
            self.state["temp_output_dict_per_obj"][idx]["cond_frame_outputs"][frame] = dict(out)


def session_frames(session: Any) -> torch.Tensor:
    """A session's model-input frames, ``[N, 3, S, S]``."""
    return torch.stack([session.frames[k] for k in range(len(session.frames))])


def _by_object(obj_ids: list[int], video_res_masks: torch.Tensor) -> Masks:
    return {o: (video_res_masks[i, 0] > 0).cpu().numpy() for i, o in enumerate(obj_ids)}


# ---- the differential runner -----------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One mask the engine reported next to stock's: on which frame, of which object, whether
    the engine claimed it exact, how many pixels differ, and their IoU (1 when both empty)."""

    frame_index: int
    obj_id: int
    claimed_exact: bool
    differing: int
    engine_area: int
    stock_area: int
    iou: float

    @property
    def failed(self) -> bool:
        return self.claimed_exact and self.differing > 0


@dataclass
class Step:
    """One operation applied to both: the engine's ``exact`` and every comparison made."""

    index: int
    op: Operation
    exact: bool = True
    comparisons: list[Comparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # e.g. different frames reported

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.failed]

    @property
    def failed(self) -> bool:
        return bool(self.failures or self.problems)


class Differential:
    """A session and a ``StockOracle`` of its frames, driven by the same operations.

    ``apply`` runs an operation on the session (the engine's result first: it assigns a new
    object's id), then on stock with that id, and compares the masks the operation computed:
    the prompted object's on its frame, each cleared object's on the cleared frame, and every
    propagated object's on every frame a propagation reports. An object the engine leaves out
    of a result counts as an all-False mask.
    """

    def __init__(
        self, session: Any, model: StockPredictor, encoded: EncodedFrames | None = None
    ) -> None:
        self.session = session
        video, frames = session.video, session_frames(session)
        self.oracle = StockOracle(model, frames, video.height, video.width, encoded)
        self.steps: list[Step] = []
        self.since = 0  # first step of the current sequence

    @property
    def encoded(self) -> EncodedFrames:
        return self.oracle.state["cached_features"]

    def begin(self) -> None:
        """Start a new sequence on this session: reset first (both) if it was used before.
        Checks and reports then cover the new sequence's steps, its reset included."""
        self.since = len(self.steps)
        if self.steps:
            self.apply(Reset())

    @property
    def sequence(self) -> list[Step]:
        return self.steps[self.since :]

    def apply(self, op: Operation) -> Step:
        step = Step(len(self.steps), op)
        self.steps.append(step)
        try:
            if isinstance(op, Prompt):
                self._prompt(op, step)
            elif isinstance(op, PropagationRequest):
                self._propagate(op, step)
            elif isinstance(op, Clear):
                result = self.session.clear_prompts(op.frame_index, op.obj_id)
                step.exact = result.exact
                expected = self.oracle.clear(op.frame_index, op.obj_id)
                got = _decoded(result.masks)
                for obj_id, mask in expected.items():
                    self._compare(step, op.frame_index, obj_id, got, mask, result.exact)
            elif isinstance(op, Remove):
                self.session.remove_object(op.obj_id)
                self.oracle.remove(op.obj_id)
            elif isinstance(op, Reset):
                self.session.reset()
                self.oracle.reset()
            else:
                raise TypeError(f"not an operation: {op!r}")
        except Exception as exc:
            exc.add_note(f"at step {step.index} of:\n{self.describe(step.index)}")
            raise
        return step

    def run(self, ops: list[Operation]) -> list[Step]:
        """Apply ``ops`` in order; their steps."""
        return [self.apply(op) for op in ops]

    def _prompt(self, prompt: Prompt, step: Step) -> None:
        result = self.session.add_prompt(prompt)
        step.exact = result.exact
        if prompt.obj_id is None:  # record the id the engine gave, so the log replays
            step.op = prompt.model_copy(update={"obj_id": result.obj_id})
        expected = self.oracle.prompt(prompt, result.obj_id)
        got = _decoded(result.masks)
        frame = prompt.frame_index
        self._compare(step, frame, result.obj_id, got, expected[result.obj_id], result.exact)

    def _propagate(self, request: PropagationRequest, step: Step) -> None:
        # Stock walks on a thread of its own meanwhile: the two share nothing (their own
        # modules and states; one torch thread each), and the wait is the longer of the two.
        with ThreadPoolExecutor(max_workers=1) as pool:
            stock_walk = pool.submit(self.oracle.propagate, request)
            running = self.session.propagate(request)
            try:
                events = list(running)
            finally:
                running.close()  # a walk that raised leaves the session free all the same
                expected = stock_walk.result()
        done = events[-1]
        assert isinstance(done, PropagationDone), done
        frames = [e for e in events[:-1] if isinstance(e, FrameMasks)]
        step.exact = done.exact
        approximate = {f for first, last in done.approximate_frames for f in _span(first, last)}
        if done.exact and approximate:
            step.problems.append(f"exact, yet approximate_frames={done.approximate_frames}")
        got_order = [e.frame_index for e in frames]
        expected_order = [frame for frame, _ in expected]
        if got_order != expected_order or done.frames != len(expected):
            step.problems.append(
                f"frames reported {_runs(got_order)} (done.frames={done.frames}), "
                f"stock walks {_runs(expected_order)}"
            )
        for event, (frame, masks) in zip(frames, expected, strict=False):
            if event.frame_index != frame:
                break
            got = _decoded(event.masks)
            claimed = frame not in approximate
            for obj_id, mask in masks.items():
                self._compare(step, frame, obj_id, got, mask, claimed)

    @staticmethod
    def _compare(
        step: Step, frame: int, obj_id: int, got: Masks, stock: np.ndarray, claimed: bool
    ) -> None:
        mask = got.get(obj_id)
        if mask is None:
            mask = np.zeros_like(stock)
        if mask.shape != stock.shape:
            step.problems.append(f"frame {frame} object {obj_id}: shape {mask.shape}")
            return
        differing = int(np.count_nonzero(mask != stock))
        union = int(np.count_nonzero(mask | stock))
        iou = 1.0 if union == 0 else 1.0 - differing / union
        comparison = Comparison(
            frame, obj_id, claimed, differing, int(mask.sum()), int(stock.sum()), iou
        )
        step.comparisons.append(comparison)

    # ---- reports -------------------------------------------------------------------------------

    def describe(self, upto: int | None = None) -> str:
        """The current sequence's operations (up to step ``upto``, included), one per line:
        a repro on a new session (where the sequence begins with the reset of a used one)."""
        end = len(self.steps) if upto is None else upto + 1
        lines = [f"  {s.index:2d}. {describe(s.op)}" for s in self.steps[self.since : end]]
        if self.since:
            lines.insert(0, f"  (the session's steps 0..{self.since - 1}: earlier sequences)")
        return "\n".join(lines)

    def first_failure(self) -> Step | None:
        return next((s for s in self.sequence if s.failed), None)

    def report(self, step: Step) -> str:
        lines = [f"step {step.index} ({describe(step.op)}) differs from stock SAM 2:"]
        lines += [f"  {p}" for p in step.problems]
        failures = step.failures
        for c in failures[:8]:
            lines.append(
                f"  frame {c.frame_index} object {c.obj_id}: {c.differing} pixels differ "
                f"(engine area {c.engine_area}, stock {c.stock_area}), reported exact"
            )
        if len(failures) > 8:
            lines.append(f"  ... {len(failures) - 8} more masks")
        lines.append("operations:")
        lines.append(self.describe(step.index))
        return "\n".join(lines)

    def assert_exact_steps_match(self) -> None:
        """Every mask the engine reported exact is stock's, bit for bit."""
        failure = self.first_failure()
        assert failure is None, self.report(failure)

    def assert_faithful(self) -> None:
        """Every step reported exact, and every mask stock's, bit for bit."""
        self.assert_exact_steps_match()
        inexact = [s for s in self.sequence if not s.exact]
        assert not inexact, (
            f"step {inexact[0].index} ({describe(inexact[0].op)}) reported exact=False "
            f"within the retention budget:\n{self.describe(inexact[0].index)}"
        )


def _decoded(masks: list[Any]) -> Masks:
    return {m.obj_id: decode_mask(m.rle) for m in masks}


def _span(first: int, last: int) -> range:
    return range(min(first, last), max(first, last) + 1)


def _runs(frames: list[int]) -> str:
    """``[0, 1, 2, 5, 4]`` as ``0..2, 5..4``: a walk's frames, short."""
    if not frames:
        return "none"
    runs, begin, prev = [], frames[0], frames[0]
    for frame in frames[1:]:
        if abs(frame - prev) != 1 or (prev - begin) * (frame - prev) < 0:
            runs.append((begin, prev))
            begin = frame
        prev = frame
    runs.append((begin, prev))
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def describe(op: Operation) -> str:
    """An operation in one short line (a mask prompt by its area, not its RLE)."""
    if isinstance(op, Prompt):
        parts = [f"prompt frame={op.frame_index} obj={op.obj_id}"]
        if op.mask is not None:
            ys, xs = np.nonzero(decode_mask(op.mask))
            bbox = f"x {xs.min()}..{xs.max()} y {ys.min()}..{ys.max()}" if len(xs) else "empty"
            parts.append(f"mask(area={len(xs)}, {bbox})")
        if op.box is not None:
            parts.append(f"box={tuple(op.box)}")
        if op.normalized:
            parts.append("normalized")
        if op.points:
            points = [tuple(point) for point in op.points]
            parts.append(f"points={points} labels={op.labels or [1] * len(points)}")
            parts.append(f"clear_old_points={op.clear_old_points}")
        return " ".join(parts)
    if isinstance(op, PropagationRequest):
        return (
            f"propagate {op.direction} start={op.start_frame_index} "
            f"max_frames={op.max_frames} obj_ids={op.obj_ids}"
        )
    if isinstance(op, Clear):
        return f"clear frame={op.frame_index} obj={op.obj_id}"
    if isinstance(op, Remove):
        return f"remove obj={op.obj_id}"
    return "reset"

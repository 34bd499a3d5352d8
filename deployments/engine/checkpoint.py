"""``StateCheckpoint``: a session's SAM 2 prompt state on the shared storage, so a replica that
rebuilds the session holds the live session's conditioning outputs bit for bit.

What is kept: per object and prompted frame, SAM 2's inputs (points, mask) and its prompt
outputs (consolidated and not yet consolidated: memory features, object pointer, mask logits,
object score, exactness); per object the frames a propagation tracked (and which way) and the
frames where stock SAM 2 holds a non-conditioning output; the memory positional encoding; the
prompt log's sequence number the state follows; the propagation under way, if any.

Not kept: non-conditioning outputs. A rebuilt session equals a live one whose retention
window dropped them all at that point (``NonCondOutputs.drop_all``).

One file per (object, frame) unit, rewritten only when one of its tensors changed, plus
``manifest.json`` (written last, atomically): a unit file not named there is ignored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import torch

import deployments.engine.state as sam_state
from deployments.engine.ledger import EXACT_KEY, OUTPUT_TENSORS, is_exact

logger = logging.getLogger(__name__)

_VERSION = 1
# Per-frame containers of an object: (state key, sub key or None).
_UNIT_PARTS = {
    "points": ("point_inputs_per_obj", None),
    "mask": ("mask_inputs_per_obj", None),
    "cond": ("output_dict_per_obj", "cond_frame_outputs"),
    "temp_cond": ("temp_output_dict_per_obj", "cond_frame_outputs"),
    "temp_non_cond": ("temp_output_dict_per_obj", "non_cond_frame_outputs"),
}


class StateCheckpoint:
    """The checkpoint of one session in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # unit file -> identities of what it was written from (skip unchanged units)
        self._written: dict[str, tuple[Any, ...]] = {}

    def exists(self) -> bool:
        return (self.directory / "manifest.json").is_file()

    def save(self, state: dict[str, Any], seq: int, running: dict[str, Any] | None) -> None:
        """Write what changed since the last save, then the manifest (model thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        units = {}
        for obj_id, idx in state["obj_id_to_idx"].items():
            for frame in _unit_frames(state, idx):
                name = f"obj{obj_id}_f{frame}.pt"
                parts = {part: _part(state, idx, frame, part) for part in _UNIT_PARTS}
                units[name] = _identity(parts)
                if self._written.get(name) != units[name]:
                    _atomic_save(self.directory / name, _to_host(parts))
                    self._written[name] = units[name]
        constants = state["constants"].get("maskmem_pos_enc")
        if constants is not None and not (self.directory / "constants.pt").is_file():
            _atomic_save(self.directory / "constants.pt", [t.cpu() for t in constants])
        manifest = {
            "version": _VERSION,
            "seq": seq,
            "running": running,
            "objects": [
                {
                    "obj_id": obj_id,
                    "tracked": _pack(state["frames_tracked_per_obj"][idx].codes),
                    "held": _pack(sam_state.non_cond_outputs(state, idx).held_by_stock()),
                }
                for obj_id, idx in state["obj_id_to_idx"].items()
            ],
            "units": sorted(units),
        }
        _atomic_write(self.directory / "manifest.json", json.dumps(manifest).encode())
        for stale in set(self._written) - set(units):
            (self.directory / stale).unlink(missing_ok=True)
            del self._written[stale]

    def load(self, predictor: torch.nn.Module, state: dict[str, Any]) -> tuple[int, dict | None]:
        """Fill a fresh state from the checkpoint (model thread); (its seq, the propagation
        that was under way or None). Every non-conditioning output stock SAM 2 holds is
        marked dropped."""
        manifest = json.loads((self.directory / "manifest.json").read_bytes())
        if manifest["version"] != _VERSION:
            raise ValueError(f"checkpoint version {manifest['version']} is not {_VERSION}")
        constants_file = self.directory / "constants.pt"
        if constants_file.is_file():
            pos_enc = torch.load(constants_file, map_location=state["device"])
            state["constants"]["maskmem_pos_enc"] = pos_enc
        for entry in manifest["objects"]:
            idx = predictor._obj_id_to_idx(state, entry["obj_id"])
            sam_state.adopt(state, idx)
            state["frames_tracked_per_obj"][idx].codes[:] = _unpack(entry["tracked"])
            sam_state.non_cond_outputs(state, idx).dropped[:] = _unpack(entry["held"])
        for name in manifest["units"]:
            obj_id, frame = _parse_unit(name)
            parts = torch.load(self.directory / name, map_location="cpu", weights_only=True)
            _restore_unit(state, state["obj_id_to_idx"][obj_id], frame, parts)
        self._written.clear()  # the next save writes every unit again, from this state
        return manifest["seq"], manifest["running"]


def _unit_frames(state: dict[str, Any], idx: int) -> set[int]:
    frames: set[int] = set()
    for key, sub in _UNIT_PARTS.values():
        container = state[key][idx] if sub is None else state[key][idx][sub]
        frames.update(container)
    return frames


def _part(state: dict[str, Any], idx: int, frame: int, part: str) -> Any:
    key, sub = _UNIT_PARTS[part]
    container = state[key][idx] if sub is None else state[key][idx][sub]
    return dict.get(container, frame)


def _identity(parts: dict[str, Any]) -> tuple[Any, ...]:
    """What a unit's file was written from: the objects themselves (kept alive here, so an
    identity is never reused) and each output's memory features, which SAM 2 fills in later."""
    refs: list[Any] = []
    for value in parts.values():
        refs.append(value)
        if isinstance(value, dict) and "maskmem_features" in value:
            refs.append(value["maskmem_features"])
    return tuple(_Ref(r) for r in refs)


class _Ref:
    """Compares by identity; holds its object."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ref) and other.obj is self.obj

    __hash__ = None  # type: ignore[assignment]


def _to_host(parts: dict[str, Any]) -> dict[str, Any]:
    host: dict[str, Any] = {}
    for part, value in parts.items():
        if value is None:
            continue
        if part == "points":
            host[part] = {k: t.cpu() for k, t in value.items()}
        elif part == "mask":
            host[part] = value.cpu().bool()  # SAM 2's mask inputs are 0./1. floats
        else:
            tensors = {k: value[k].cpu() for k in OUTPUT_TENSORS if value.get(k) is not None}
            host[part] = {**tensors, "exact": torch.tensor(is_exact(value))}
    return host


def _restore_unit(state: dict[str, Any], idx: int, frame: int, parts: dict[str, Any]) -> None:
    device, storage = state["device"], state["storage_device"]
    for part, value in parts.items():
        key, sub = _UNIT_PARTS[part]
        container = state[key][idx] if sub is None else state[key][idx][sub]
        if part == "points":
            container[frame] = {k: t.to(device) for k, t in value.items()}
        elif part == "mask":
            container[frame] = value.to(device).float()
        else:
            container[frame] = _output(state, value, device, storage)


def _output(
    state: dict[str, Any], saved: dict[str, torch.Tensor], device: Any, storage: Any
) -> dict[str, Any]:
    """A SAM 2 output dict as ``_run_single_frame_inference`` lays it out."""
    features = saved.get("maskmem_features")
    pos_enc = None
    if features is not None:
        pos_enc = [
            t.expand(features.shape[0], -1, -1, -1) for t in state["constants"]["maskmem_pos_enc"]
        ]
    out = {
        "maskmem_features": None if features is None else features.to(storage),
        "maskmem_pos_enc": pos_enc,
        "pred_masks": saved["pred_masks"].to(storage),
        "obj_ptr": saved["obj_ptr"].to(device),
        "object_score_logits": saved["object_score_logits"].to(device),
    }
    if not bool(saved["exact"]):
        out[EXACT_KEY] = False
    return out


def _parse_unit(name: str) -> tuple[int, int]:
    obj, frame = name.removesuffix(".pt").split("_f")
    return int(obj.removeprefix("obj")), int(frame)


def _pack(codes: bytearray) -> str:
    return base64.b64encode(zlib.compress(bytes(codes))).decode()


def _unpack(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


def _atomic_save(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".part")
    torch.save(value, tmp)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)

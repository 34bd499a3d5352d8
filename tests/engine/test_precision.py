"""The compute dtype: chosen per device and CPU, forced by the setting, and SAM 2 running in it
(fp32 used to crash when two objects were first prompted on different frames)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deployments.engine import SessionEngine, load_predictor
from deployments.engine.precision import cpu_has_native_bf16, resolve_compute_dtype
from deployments.engine.predictor import ServingVideoPredictor
from deployments.protocol import Prompt, PropagationDone, PropagationRequest
from tests.conftest import engine_settings
from tests.videos import circle_at

CPU = torch.device("cpu")
NUM_FRAMES = 24  # the conftest clip


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


def test_the_setting_overrides_the_automatic_choice():
    assert resolve_compute_dtype("float32", torch.device("cuda")) == torch.float32
    assert resolve_compute_dtype("bfloat16", CPU) == torch.bfloat16


def test_auto_is_bf16_on_cuda():
    assert resolve_compute_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_auto_on_this_cpu_follows_its_native_bf16():
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_compute_dtype("auto", CPU) == expected


def test_a_cpu_without_bf16_instructions_has_no_native_bf16(tmp_path):
    assert not cpu_has_native_bf16(cpuinfo(tmp_path, "avx512f avx512bw"))


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512", reason="needs torch at AVX512 level"
)
def test_bf16_instructions_count_unless_onednn_is_capped_below_them(tmp_path, monkeypatch):
    info = cpuinfo(tmp_path, "avx512f avx512_bf16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_has_native_bf16(info)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_native_bf16(info)


def test_torch_capped_at_avx2_chooses_fp32():
    """ATEN_CPU_CAPABILITY=avx2 is how a plain AVX2 CPU is reproduced on an AVX-512 one."""
    code = (
        "import torch; from deployments.engine.precision import resolve_compute_dtype as r; "
        "print(r('auto', torch.device('cpu')))"
    )
    env = os.environ | {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "torch.float32"


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def typed_predictor(request, tmp_path_factory) -> ServingVideoPredictor:
    settings = engine_settings(tmp_path_factory.mktemp("unused"), compute_dtype=request.param)
    return load_predictor(settings)


def test_the_predictor_and_engine_compute_in_the_chosen_dtype(typed_predictor, tmp_path):
    engine = SessionEngine(engine_settings(tmp_path), predictor=typed_predictor)
    try:
        assert engine.compute_dtype == str(typed_predictor.compute_dtype).removeprefix("torch.")
        assert engine.executor.run("t", lambda: torch.is_autocast_enabled("cpu")) == (
            typed_predictor.compute_dtype == torch.bfloat16
        )
    finally:
        engine.close()


def test_two_objects_first_prompted_on_different_frames_propagate(typed_predictor, tmp_path, video):
    """In fp32, sam2 1.1.0's bf16 memories met fp32 weights here and propagation crashed."""
    engine = SessionEngine(engine_settings(tmp_path), predictor=typed_predictor)
    try:
        session = engine.session(engine.create_session(video).session_id)
        x, y = circle_at(3, NUM_FRAMES, (160, 120))
        session.add_prompt(Prompt(frame_index=3, obj_id=1, points=[(x, y)]))
        session.add_prompt(Prompt(frame_index=15, obj_id=2, box=(100, 40, 150, 80)))
        *frames, done = session.propagate(PropagationRequest(direction="both"))
        assert isinstance(done, PropagationDone) and not done.cancelled
        assert sorted(f.frame_index for f in frames) == list(range(NUM_FRAMES))
        objects = {o.obj_id: o for o in session.objects()}
        assert objects[1].prompt_frames == [3] and objects[2].prompt_frames == [15]
        stored = {f.frame_index: [m.obj_id for m in f.masks] for f in session.masks.frames()}
        assert len(stored) == NUM_FRAMES and all(ids == [1, 2] for ids in stored.values())
        memories = [
            out["maskmem_features"]
            for per_obj in session._state["output_dict_per_obj"].values()
            for outputs in per_obj.values()
            for out in outputs.values()
        ]
        assert memories and {m.dtype for m in memories} == {typed_predictor.compute_dtype}
    finally:
        engine.close()

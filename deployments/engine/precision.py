"""The compute dtype of the model, per device, and the thread context that applies it.

bf16 autocast halves the memory traffic of SAM 2 on CUDA and on CPUs with native bf16
instructions (AVX512_BF16, AMX). Elsewhere torch emulates bf16 on the CPU, measured 7.8-10.7x
slower than fp32 for SAM 2.1 tiny's image encoder (docs/benchmarks.md), so those CPUs run fp32.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

import torch

DtypeSetting = Literal["auto", "bfloat16", "float32"]
# CPU flags (/proc/cpuinfo) of instructions that compute in bf16: x86 AVX512_BF16 and AMX;
# Arm's BF16 extension is "bf16".
_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_ARM_BF16_FLAG = "bf16"
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still allow bf16 instructions.
_BF16_ONEDNN_ISAS = frozenset(
    {
        "ALL",
        "DEFAULT",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    }
)


def resolve_compute_dtype(setting: DtypeSetting, device: torch.device) -> torch.dtype:
    """The dtype the settings ask for; ``auto`` is bf16 on CUDA and on native-bf16 CPUs."""
    if setting == "bfloat16":
        return torch.bfloat16
    if setting == "float32":
        return torch.float32
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether torch on this CPU computes bf16 natively: the CPU has the instructions and
    neither ``ATEN_CPU_CAPABILITY`` nor ``ONEDNN_MAX_CPU_ISA`` caps torch below them."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    if flags & _X86_BF16_FLAGS:
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
        return torch.backends.cpu.get_cpu_capability() == "AVX512" and isa in _BF16_ONEDNN_ISAS
    return _ARM_BF16_FLAG in flags


def model_context(device: torch.device, dtype: torch.dtype) -> contextlib.ExitStack:
    """Inference mode, autocast when computing in bf16, TF32 matmuls on Ampere and newer.

    Autocast state is thread-local: enter this on the thread that runs the model.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if dtype != torch.float32:
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
    if device.type == "cuda" and torch.cuda.get_device_properties(device).major >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return stack

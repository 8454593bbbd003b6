"""What ``python -m ops.compile_check based`` compiles: the three kernels at BASED's widths (feature dim 16, head
dim 64) with the launch shapes the wrapper uses for 16-bit and fp32 inputs, normalised and not."""
import torch

from ops.based import triton as kernels
from ops.compile_check import CompileCase

DTYPES = {"16bit": (torch.bfloat16, "*bf16"), "fp32": (torch.float32, "*fp32")}


def cases(K: int = 16, V: int = 64):
    BK, BV = kernels._widths(K, V)
    widths = dict(V=V, BV=BV)
    for kind, (dtype, pointer) in DTYPES.items():
        precision = kernels._precision(dtype)  # compile_check runs without the interpreter: the GPU choice
        tensors = {name: pointer for name in ("q", "k", "v", "o", "do", "dq", "dk", "dv")}
        types = dict(tensors, g="*fp32", dz="*fp32", scale="fp32", eps="fp32")
        for use_norm in (True, False):
            flags = dict(widths, K=K, BK=BK, USE_NORM=use_norm, PRECISION=precision)
            BT, BS, warps, stages = kernels.FORWARD_BLOCKS[kind]
            yield CompileCase(f"forward {kind} use_norm={use_norm}", kernels._based_fwd_kernel, types,
                              dict(flags, BT=BT, BS=BS), warps, stages)
            BT, BS, warps, stages = kernels.BACKWARD_BLOCKS[kind]
            yield CompileCase(f"backward {kind} use_norm={use_norm}", kernels._based_bwd_kernel, types,
                              dict(flags, BT=BT, BS=BS), warps, stages)
        yield CompileCase(f"backward pre-pass {kind}", kernels._based_bwd_prepass_kernel, types,
                          dict(widths, BT=kernels.PREPASS_ROWS), 4)

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


# The anchor shape of the report (docs/peers.md): batch, T, heads, feature dim, head dim; bf16, normalised.
ANCHOR = (8, 2048, 12, 16, 64)


def report_cases():
    """The three kernels as the wrapper launches them at the anchor shape (contiguous (B, T, H, D) tensors, bf16);
    one main-loop iteration of the forward and backward handles a BT x BS block of (query, key) pairs."""
    B, T, H, K, V = ANCHOR
    BK, BV = kernels._widths(K, V)
    pointer = DTYPES["16bit"][1]
    types = dict({name: pointer for name in ("q", "k", "v", "o", "do", "dq", "dk", "dv")},
                 g="*fp32", dz="*fp32", scale="fp32", eps="fp32")
    qk = dict(stride_qb=T * H * K, stride_qt=H * K, stride_qh=K, stride_dqb=T * H * K, stride_dqt=H * K, stride_dqh=K)
    vo = dict(stride_vb=T * H * V, stride_vt=H * V, stride_vh=V, stride_ob=T * H * V, stride_ot=H * V, stride_oh=V)
    values = dict(qk, **vo, T=T, H=H)
    shape = f"B{B} T{T} H{H} F{K} V{V}"
    flags = dict(K=K, V=V, BK=BK, BV=BV, USE_NORM=True, PRECISION=kernels._precision(torch.bfloat16))
    BT, BS, warps, stages = kernels.FORWARD_BLOCKS["16bit"]
    yield CompileCase("forward", kernels._based_fwd_kernel, types, dict(flags, BT=BT, BS=BS), warps, stages,
                      shape=shape, values=values, loop_elements=BT * BS)
    BT, BS, warps, stages = kernels.BACKWARD_BLOCKS["16bit"]
    yield CompileCase("backward", kernels._based_bwd_kernel, types, dict(flags, BT=BT, BS=BS), warps, stages,
                      shape=shape, values=values, loop_elements=BT * BS)
    yield CompileCase("backward pre-pass", kernels._based_bwd_prepass_kernel, types,
                      dict(V=V, BV=BV, BT=kernels.PREPASS_ROWS), 4, shape=shape,
                      values=dict(stride_vb=T * H * V, stride_vt=H * V, stride_vh=V, T=T, H=H))

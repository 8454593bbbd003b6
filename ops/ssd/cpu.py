"""SSD on CPU, faster: the reference's chunked form with its (Q, Q) intra-chunk weights compiled (cpu_kernel.c).

Same semantics and gradients as ``ops.ssd.reference.ssd_chunked`` (the definition), which this runs with one
piece swapped: ``chunk_scores``, C_t.B_s exp(a_t - a_s) dt'_s masked to s <= t, is in PyTorch five elementwise
passes over (batch, chunks, heads, Q, Q) tensors and about ten in its backward, the bulk of SSD's time on a CPU at
Mamba-2's training shapes; the kernel writes the weights once and their gradients in one pass. Everything else
(the matmuls, the states across chunks) stays the reference's PyTorch. float32 arithmetic, as the reference's for
float32 and 16-bit inputs; float64 inputs stay on the reference.

The kernel is compiled at first use by ``ops._native`` (needs a C compiler; cached on disk). ``available()``
says whether it runs here; ``ops.ssd.ssd(backend="auto")`` takes it on CPU when it does. One call does every
block on the calling thread.
"""
import ctypes
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ops._native import NativeKernel, pointer as _ptr
from ops.ssd.reference import NO_LIMIT, ssd_chunked

KERNEL_SOURCE = Path(__file__).with_name("cpu_kernel.c")
_pointer, _size = ctypes.c_void_p, ctypes.c_int64
_KERNEL = NativeKernel(KERNEL_SOURCE, {"ssd_scores_forward": ([_pointer] * 5 + [_size] * 4, None),
                                       "ssd_scores_backward": ([_pointer] * 8 + [_size] * 4, None)})


def available() -> bool:
    return _KERNEL.available()


def unavailable_reason() -> str | None:
    return _KERNEL.unavailable_reason()


class _Scores(torch.autograd.Function):
    """CB (b, c, g, Q, Q), log_decay and dts (b, c, g, r, Q), float32; keep (b, c, Q, Q) uint8 or None."""

    @staticmethod
    def forward(ctx, CB, log_decay, dts, keep):
        b, c, g, r, Q = log_decay.shape
        CB, log_decay, dts = CB.contiguous(), log_decay.contiguous(), dts.contiguous()
        out = CB.new_empty(b, c, g, r, Q, Q)
        _KERNEL.library().ssd_scores_forward(_ptr(CB), _ptr(log_decay), _ptr(dts), _ptr(keep), _ptr(out),
                                             b * c, g, r, Q)
        ctx.save_for_backward(CB, log_decay, dts, keep)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):
        CB, log_decay, dts, keep = ctx.saved_tensors
        b, c, g, r, Q = log_decay.shape
        d_out = d_out.contiguous()
        d_CB, d_log_decay, d_dts = torch.empty_like(CB), torch.empty_like(log_decay), torch.empty_like(dts)
        _KERNEL.library().ssd_scores_backward(_ptr(CB), _ptr(log_decay), _ptr(dts), _ptr(keep), _ptr(d_out),
                                              _ptr(d_CB), _ptr(d_log_decay), _ptr(d_dts), b * c, g, r, Q)
        return d_CB, d_log_decay, d_dts, None


def chunk_scores(CB, log_decay, dts, pairs=None):
    """``reference.chunk_scores`` for float32 tensors, compiled."""
    keep = None if pairs is None else pairs.to(torch.uint8).contiguous()
    return _Scores.apply(CB, log_decay, dts, keep)


def ssd_cpu(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=NO_LIMIT,
            initial_states=None, seq_idx=None, return_final_states=False):
    """``reference.ssd_chunked`` with the compiled ``chunk_scores``; CPU tensors, not float64."""
    if torch.promote_types(x.dtype, torch.float32) != torch.float32:
        raise ValueError(f"ssd: the CPU kernel computes in float32; {x.dtype} inputs take the reference")
    return ssd_chunked(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, dt_limit, initial_states, seq_idx,
                       return_final_states, scores=chunk_scores)

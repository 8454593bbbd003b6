"""Depthwise causal conv1d on CPU, compiled: cpu_kernel.c's channel-last forward and backward.

Same outputs and gradients as ``ops.causal_conv1d.reference`` (the definition) for inputs without initial states
(the training path; continuation from a state runs ``shifted.py``). The blocks hand the conv a (batch, dim, L)
transposed view of (batch, L, dim) rows; the kernel reads those rows in place, writes the output as (batch, L,
dim) rows (returned as the same kind of view) and does the backward in one pass, instead of PyTorch's one pass
per tap over transposed views. float32 arithmetic; 16-bit inputs run in float32 and are cast back, float64 stays
on the PyTorch paths.

The kernel is compiled at first use by ``ops._native`` (needs a C compiler; cached on disk). ``available()``
says whether it runs here; ``ops.causal_conv1d.causal_conv1d(backend="auto")`` takes it on CPU when it does.
One call does every batch row on the calling thread.
"""
import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ops._native import NativeKernel, pointer as _ptr
from ops.causal_conv1d.reference import check_activation

KERNEL_SOURCE = Path(__file__).with_name("cpu_kernel.c")
_pointer, _size = ctypes.c_void_p, ctypes.c_int64
_KERNEL = NativeKernel(KERNEL_SOURCE, {
    "causal_conv1d_forward": ([_pointer, _size, _size, _pointer, _pointer, _size, _pointer] + [_size] * 4, None),
    "causal_conv1d_backward": ([_pointer, _size, _size, _pointer, _pointer, _size] + [_pointer] * 5 + [_size] * 4,
                               None),
})


def available() -> bool:
    return _KERNEL.available()


def unavailable_reason() -> str | None:
    return _KERNEL.unavailable_reason()


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim, L) -> a (batch, L, dim) float32 view with unit channel stride (copied only when it is not)."""
    rows = x.transpose(1, 2)
    return rows if rows.stride(2) == 1 else rows.contiguous()


class _Conv(torch.autograd.Function):
    """x (batch, dim, L) float32, weight (dim, W) float32, bias (dim,) float32 or None -> out (batch, dim, L)."""

    @staticmethod
    def forward(ctx, x, weight, bias, act: bool):
        batch, dim, length = x.shape
        width = weight.shape[1]
        rows = _rows(x)
        taps = weight.t().contiguous()
        out = x.new_empty(batch, length, dim)
        _KERNEL.library().causal_conv1d_forward(_ptr(rows), rows.stride(0), rows.stride(1), _ptr(taps), _ptr(bias),
                                                int(act), _ptr(out), batch, length, dim, width)
        ctx.save_for_backward(rows, taps, bias)
        ctx.act = act
        return out.transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):
        rows, taps, bias = ctx.saved_tensors
        batch, length, dim = rows.shape
        width = taps.shape[0]
        g = d_out.transpose(1, 2).float().contiguous()
        dx, d_taps = rows.new_empty(batch, length, dim), rows.new_empty(width, dim)
        d_bias = None if bias is None else rows.new_empty(dim)
        scratch = rows.new_empty(dim)  # named: a temporary would be freed before the kernel runs
        _KERNEL.library().causal_conv1d_backward(_ptr(rows), rows.stride(0), rows.stride(1), _ptr(taps), _ptr(bias),
                                                 int(ctx.act), _ptr(g), _ptr(dx), _ptr(d_taps), _ptr(d_bias),
                                                 _ptr(scratch), batch, length, dim, width)
        return dx.transpose(1, 2), d_taps.t(), d_bias, None


def causal_conv1d(x, weight, bias=None, return_final_states=False, activation=None):
    """``reference.causal_conv1d`` without initial states, on CPU tensors; float32, bfloat16 or float16."""
    check_activation(activation)
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"causal_conv1d: the CPU kernel takes float32, bfloat16 or float16, got {x.dtype}")
    width = weight.shape[1]
    out = _Conv.apply(x.float(), weight.float(), None if bias is None else bias.float(), activation is not None)
    out = out.to(x.dtype)
    if not return_final_states:
        return out
    tail = x[..., max(0, x.shape[-1] - (width - 1)):]                  # the last W - 1 inputs, zeros before t = 0
    return out, F.pad(tail, (width - 1 - tail.shape[-1], 0)).contiguous()

"""The running top-k on CPU, compiled: the sorted insertion of cpu_kernel.c, one batch row at a time.

Same values, ranks, sources and gradients as ``ops.co4.reference`` (the definition); the reference sorts the
k + 1 candidates with PyTorch at every step (dozens of small ops per token), the kernel keeps each channel's sorted
table and inserts each token in O(k) elementwise work over the channels; it ranks by the same key (the value
rounded to bfloat16, ``ops.co4.reference.ranking_key``). float32 and float64 run as they are; 16-bit inputs run
in float32 (exact: the rows are copies of the inputs, and their keys are the same), the results cast back.

The kernel is compiled at first use by ``ops._native`` (needs a C compiler; cached on disk). ``available()``
says whether it runs here; ``ops.running_topk(backend="auto")`` takes it on CPU when it does, the reference
otherwise. One call does every batch row on the calling thread.
"""
import ctypes
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ops._native import NativeKernel, pointer as _ptr

KERNEL_SOURCE = Path(__file__).with_name("cpu_kernel.c")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_pointer, _size = ctypes.c_void_p, ctypes.c_int64
_FORWARD_ARGS = [_pointer, _pointer, _size] + [_size] * 4 + [_pointer] * 6 + [_size] * 2
_BACKWARD_ARGS = [_pointer, _pointer] + [_size] * 4 + [_pointer] * 2 + [_size] * 2
_KERNEL = NativeKernel(KERNEL_SOURCE, {
    **{f"running_topk_forward_{suffix}": (_FORWARD_ARGS, ctypes.c_int) for suffix in _SUFFIX.values()},
    **{f"running_topk_backward_{suffix}": (_BACKWARD_ARGS, ctypes.c_int) for suffix in _SUFFIX.values()}})
_library, available, unavailable_reason = _KERNEL.library, _KERNEL.available, _KERNEL.unavailable_reason


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _SUFFIX else torch.float32


class _RunningTopk(torch.autograd.Function):
    """(top, rank, source) on contiguous float32 / float64 inputs; source int32, -1 for unfilled rows."""

    @staticmethod
    def forward(ctx, values, initial, k: int, initial_count: int):
        B, T, C = values.shape
        suffix = _SUFFIX[values.dtype]
        top = values.new_empty(B, T, k, C)
        rank = torch.empty(B, T, C, dtype=torch.int64)
        source = torch.empty(B, T, k, C, dtype=torch.int32)
        table_val, table_src = values.new_empty(k, C), torch.empty(k, C, dtype=torch.int32)
        keys = torch.empty(k + 1, C, dtype=torch.float32)
        getattr(_library(), f"running_topk_forward_{suffix}")(
            _ptr(values), _ptr(initial), initial_count, B, T, C, k, _ptr(top), _ptr(rank), _ptr(source),
            _ptr(table_val), _ptr(table_src), _ptr(keys), 0, B)
        ctx.save_for_backward(source)
        ctx.k, ctx.has_initial, ctx.shape, ctx.dtype = k, initial is not None, (B, T, C), values.dtype
        ctx.mark_non_differentiable(rank, source)
        return top, rank, source

    @staticmethod
    @once_differentiable
    def backward(ctx, d_top, *_):
        (source,) = ctx.saved_tensors
        B, T, C = ctx.shape
        k = ctx.k
        d_values = torch.zeros(B, T, C, dtype=ctx.dtype)
        d_initial = torch.zeros(B, k, C, dtype=ctx.dtype) if ctx.has_initial else None
        if d_top is not None:
            d_top = d_top.to(ctx.dtype).contiguous()
            getattr(_library(), f"running_topk_backward_{_SUFFIX[ctx.dtype]}")(
                _ptr(d_top), _ptr(source), B, T, C, k, _ptr(d_values), _ptr(d_initial), 0, B)
        return d_values, d_initial, None, None


def running_topk_cpu(values, k, initial=None, initial_count=0, return_indices=False):
    """(top, rank, index or None) of the running top-k, compiled; see ops/co4/reference.py for the definition."""
    dtype = values.dtype
    compute = _compute_dtype(dtype)
    values_c = values.to(compute).contiguous()
    initial_c = initial.to(compute).contiguous() if initial is not None else None
    top, rank, source = _RunningTopk.apply(values_c, initial_c, k, initial_count)
    return top.to(dtype), rank, (source.to(torch.int64) if return_indices else None)

"""The DPLR delta rule on CPU, compiled: the per-step recurrence of cpu_kernel.c, one (batch, head) row at a time.

Same semantics, layouts and gradients as ``ops.dplr_delta_rule.reference`` (the definition). The chunked reference
spends a training step on dozens of PyTorch ops over (B, H, N, C, K) tensors (decay factors, masks, the
triangular solve, transposing copies) and is bound by memory traffic on a CPU; the kernel keeps each row's (K, V)
state in cache, reads the inputs in their (B, T, H, K) layout once, and saves the state every ``CHUNK`` steps, from
which its backward recomputes each chunk's states. float32 inputs (and 16-bit ones, cast) run in float32, float64
in float64, as the reference accumulates.

The kernel is compiled at first use by ``ops._native`` (needs a C compiler; cached on disk). ``available()`` says
whether it runs here; ``ops.dplr_delta_rule(backend="auto")`` takes it on CPU when it does, the reference otherwise.
Rows are cut into ranges over ``torch.get_num_threads()`` threads (ctypes drops the GIL); each output row is
written by one range, so no reduction is needed.
"""
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ops._native import NativeKernel, pointer as _ptr

KERNEL_SOURCE = Path(__file__).with_name("cpu_kernel.c")
CHUNK = 16        # steps between the forward's saved states: the backward recomputes (CHUNK + 1) * K * V numbers
_pointer, _size = ctypes.c_void_p, ctypes.c_int64
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def _kernel(real: str, c_real) -> NativeKernel:
    """The source built with REAL = float or double; the scale argument is passed in that type."""
    return NativeKernel(KERNEL_SOURCE, {
        "dplr_forward": ([_pointer] * 7 + [_size] * 5 + [c_real, _size] + [_pointer] * 4 + [_size] * 2, None),
        "dplr_backward": ([_pointer] * 9 + [_size] * 5 + [c_real, _size] + [_pointer] * 8 + [_size] * 2, None),
    }, REAL=real)


_KERNELS = {torch.float32: _kernel("float", ctypes.c_float), torch.float64: _kernel("double", ctypes.c_double)}


def _library(dtype: torch.dtype):
    return _KERNELS[dtype].library()


def available() -> bool:
    """Whether the compiled kernel runs here, in both dtypes (one source, a library for each)."""
    return all(kernel.available() for kernel in _KERNELS.values())


def unavailable_reason() -> str | None:
    return next(filter(None, (kernel.unavailable_reason() for kernel in _KERNELS.values())), None)


def _run(fn, rows: int, work_numbers: int, dtype: torch.dtype, make_args):
    """``fn(*make_args(work), begin, end)`` over row ranges, one per thread of ``torch.get_num_threads()``."""
    global _pool, _pool_pid
    threads = max(1, min(torch.get_num_threads(), rows))
    work = torch.empty(threads, work_numbers, dtype=dtype)
    bounds = [rows * i // threads for i in range(threads + 1)]
    if threads == 1:
        fn(*make_args(work[0]), 0, rows)
        return
    # a new pool after a fork too: a forked child inherits the pool object but not its threads
    if _pool is None or _pool._max_workers != threads or _pool_pid != os.getpid():
        _pool, _pool_pid = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dplr-cpu"), os.getpid()
    for future in [_pool.submit(fn, *make_args(work[i]), bounds[i], bounds[i + 1]) for i in range(threads)]:
        future.result()


def _forward(q, k, v, a, b, w, h0, scale: float, keep_checkpoints: bool):
    """(o, final state, the saved states or None) on contiguous inputs of one dtype; w = exp(gk)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = v.new_empty(B, T, H, V)
    final = v.new_empty(B, H, K, V)
    checkpoints = v.new_empty(B, H, -(-T // CHUNK), K, V) if keep_checkpoints else None
    _run(_library(q.dtype).dplr_forward, B * H, K * V + V, q.dtype,
         lambda work: (_ptr(q), _ptr(k), _ptr(v), _ptr(a), _ptr(b), _ptr(w), _ptr(h0), B, T, H, K, V, scale,
                       CHUNK, _ptr(o), _ptr(checkpoints), _ptr(final), _ptr(work)))
    return o, final, checkpoints


class _DPLR(torch.autograd.Function):
    """(o, final state) on contiguous float32 / float64 inputs of one dtype; h0 may be None."""

    @staticmethod
    def forward(ctx, q, k, v, a, b, gk, h0, scale: float):
        w = gk.exp()  # the kernel takes the decay factors (see cpu_kernel.c)
        o, final, checkpoints = _forward(q, k, v, a, b, w, h0, scale, keep_checkpoints=True)
        ctx.save_for_backward(q, k, v, a, b, w, checkpoints)
        ctx.scale, ctx.has_h0 = scale, h0 is not None
        return o, final

    @staticmethod
    @once_differentiable
    def backward(ctx, d_o, d_final):
        q, k, v, a, b, w, checkpoints = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        lib = _library(q.dtype)
        d_o = torch.zeros_like(v) if d_o is None else d_o.to(q.dtype).contiguous()
        d_final = None if d_final is None else d_final.to(q.dtype).contiguous()
        dq, dk, da, db, dgk = (torch.empty_like(q) for _ in range(5))
        dv = torch.empty_like(v)
        dh0 = q.new_empty(B, H, K, V) if ctx.has_h0 else None
        work = (CHUNK + 1) * K * V + CHUNK * V + K * V + 2 * V
        _run(lib.dplr_backward, B * H, work, q.dtype,
             lambda scratch: (_ptr(q), _ptr(k), _ptr(v), _ptr(a), _ptr(b), _ptr(w), _ptr(checkpoints), _ptr(d_o),
                              _ptr(d_final), B, T, H, K, V, ctx.scale, CHUNK, _ptr(dq), _ptr(dk), _ptr(dv),
                              _ptr(da), _ptr(db), _ptr(dgk), _ptr(dh0), _ptr(scratch)))
        return dq, dk, dv, da, db, dgk, dh0, None


def dplr_delta_rule_cpu(q, k, v, a, b, gk, scale: float | None = None, initial_state=None,
                        output_final_state: bool = False):
    """``dplr_delta_rule_chunked``'s arguments and results, compiled (CPU tensors)."""
    out_dtype = q.dtype
    dtype = torch.promote_types(q.dtype, torch.float32)  # as the reference: q's dtype, at least float32
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q, k, v, a, b, gk = (x.to(dtype).contiguous() for x in (q, k, v, a, b, gk))
    h0 = None if initial_state is None else initial_state.to(dtype).contiguous()
    inputs = (q, k, v, a, b, gk, h0)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs):
        o, final = _DPLR.apply(*inputs, scale)
    else:  # no backward to come (prefill, evaluation): no saved states
        o, final, _ = _forward(q, k, v, a, b, gk.exp(), h0, scale, keep_checkpoints=False)
    return o.to(out_dtype), (final if output_final_state else None)

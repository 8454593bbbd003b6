"""The selective scan on CPU, fast: the recurrence compiled from C (cpu_kernel.c), one (batch, channel) row at a time.

Same semantics, layouts and gradients as ``ops.selective_scan.reference`` (the readable definition); this file
only changes how the recurrence runs. The reference builds several (batch, dim, L, N) float32 tensors and is
bound by memory traffic on a CPU; the kernel keeps each row's state in registers, reads its inputs once and
writes (batch, dim, L) outputs plus a state checkpoint every 64 steps, which its backward recomputes from.

Split of work: PyTorch only casts to float32 and lays B and C out as (batch, G, L, N) (autograd maps their
gradients back); ``_Scan`` (a custom autograd Function) runs the whole op in the kernel, delta_bias, softplus,
the D skip and the z gate included, and all its gradients, with rows cut into a few ranges per thread of
``torch.get_num_threads()`` (ctypes drops the GIL), each range with its own d_A, d_B, d_C buffers, summed after.

The kernel is compiled at first use by ``ops._native`` (needs a C compiler; cached on disk). ``available()``
says whether it can run here; ``ops.selective_scan.selective_scan(backend="auto")`` uses it on CPU when it
can and the reference otherwise. Accumulation is float32 whatever the input dtype, as in the reference.
"""
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ops._native import NativeKernel, pointer as _ptr
from ops.selective_scan.restarts import restart_flags

KERNEL_SOURCE = Path(__file__).with_name("cpu_kernel.c")
CHUNK = 64                          # steps between the forward's state checkpoints (the backward's recompute span)
MAX_STATE = 256                     # the backward keeps (2 * CHUNK + 1) * N floats per thread on its stack
PRIVATE_BUFFER_FLOATS = 1 << 26     # cap on the per-task d_A/d_B/d_C copies; fewer tasks beyond it
TASKS_PER_THREAD = 4                # rows are cut finer than the threads, so a thread the OS pauses holds no one up

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pointer = ctypes.c_void_p
_size = ctypes.c_int64
# one library per state size (NSTATE sizes the kernel's register arrays), all with these signatures
_KERNEL = NativeKernel(KERNEL_SOURCE, {
    "selective_scan_forward": ([_pointer] * 5 + [_size] * 8 + [_pointer, _size] + [_pointer] * 7 + [_size] * 4, None),
    "selective_scan_backward": ([_pointer] * 5 + [_size] * 8 + [_pointer, _size] + [_pointer] * 15 + [_size] * 4,
                                None),
}, CHUNK=CHUNK)


def _kernels(n_state: int):
    return _KERNEL.library(NSTATE=n_state)


def available(n_state: int = 16) -> bool:
    """Whether the compiled kernel runs here for state size ``n_state``."""
    return 1 <= n_state <= MAX_STATE and _KERNEL.available(NSTATE=n_state)


def unavailable_reason(n_state: int = 16) -> str | None:
    if not 1 <= n_state <= MAX_STATE:
        return f"state size N={n_state} is outside 1..{MAX_STATE}"
    return _KERNEL.unavailable_reason(NSTATE=n_state)


def _bc_layout(X: torch.Tensor, dim: int) -> tuple:
    """Strides (batch, group, time) of a contiguous (batch|1, G, L|1, N) tensor, 0 where the size is 1
    (broadcast), then the number of channels per group."""
    return (*(0 if X.shape[i] == 1 else X.stride(i) for i in range(3)), dim // X.shape[1])


def _row_ranges(rows: int, workers: int) -> list:
    bounds = [rows * i // workers for i in range(workers + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(workers) if bounds[i] < bounds[i + 1]]


def _run(fn, ranges: list, make_args):
    """Call ``fn(*make_args(i), begin, end)`` for each row range i, on ``torch.get_num_threads()`` threads."""
    global _pool, _pool_pid
    threads = min(torch.get_num_threads(), len(ranges))
    if threads <= 1:
        for i, (begin, end) in enumerate(ranges):
            fn(*make_args(i), begin, end)
        return
    # a new pool after a fork too: a forked child inherits the pool object but not its threads
    if _pool is None or _pool._max_workers != threads or _pool_pid != os.getpid():
        _pool, _pool_pid = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="selective-scan-cpu"), os.getpid()
    for future in [_pool.submit(fn, *make_args(i), begin, end) for i, (begin, end) in enumerate(ranges)]:
        future.result()


def _tasks(rows: int, private_floats: int) -> int:
    """How many row ranges to cut: a few per thread, fewer when each needs private buffers of this size."""
    wanted = torch.get_num_threads() * TASKS_PER_THREAD if torch.get_num_threads() > 1 else 1
    return max(1, min(wanted, rows, PRIVATE_BUFFER_FLOATS // max(private_floats, 1)))


class _Scan(torch.autograd.Function):
    """The whole op on float32 contiguous tensors; returns (out before the cast to u's dtype, last state).

    delta, u, z: (batch, dim, L); A: (dim, N); B, C: (batch|1, G, L|1, N); D, delta_bias: (dim,); h0: (batch,
    dim, N); restart: (batch, L) uint8, nonzero where the decay into a step is 0 (packed documents); D, z,
    delta_bias, h0 and restart may be None.
    """

    @staticmethod
    def forward(ctx, delta, u, A, B, C, D, z, delta_bias, h0, restart, delta_softplus):
        batch, dim, length = u.shape
        n_state = A.shape[1]
        lib = _kernels(n_state)
        rows, n_chunks = batch * dim, -(-length // CHUNK)
        out = u.new_empty(batch, dim, length)
        last = u.new_empty(batch, dim, n_state)
        checkpoints = u.new_empty(batch, dim, n_chunks, n_state)
        args = (_ptr(delta), _ptr(u), _ptr(A), _ptr(B), _ptr(C), *_bc_layout(B, dim), *_bc_layout(C, dim),
                _ptr(delta_bias), int(delta_softplus), _ptr(D), _ptr(z),
                _ptr(h0), _ptr(restart), _ptr(out), _ptr(checkpoints), _ptr(last), dim, length)
        _run(lib.selective_scan_forward, _row_ranges(rows, _tasks(rows, 0)), lambda i: args)
        ctx.save_for_backward(delta, u, A, B, C, D, z, delta_bias, restart, checkpoints)
        ctx.has_h0, ctx.delta_softplus = h0 is not None, delta_softplus
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_last):
        delta, u, A, B, C, D, z, delta_bias, restart, checkpoints = ctx.saved_tensors
        batch, dim, length = u.shape
        n_state = A.shape[1]
        lib = _kernels(n_state)
        rows = batch * dim
        d_out = torch.zeros_like(u) if d_out is None else d_out.float().contiguous()
        d_last = None if d_last is None else d_last.float().contiguous()
        ranges = _row_ranges(rows, _tasks(rows, B.numel() + C.numel() + A.numel()))
        d_delta, d_u = torch.empty_like(delta), torch.empty_like(u)
        d_z = torch.empty_like(z) if z is not None else None
        d_bias_rows = u.new_empty(batch, dim) if delta_bias is not None else None
        d_D_rows = u.new_empty(batch, dim) if D is not None else None
        d_A = A.new_zeros(len(ranges), *A.shape)
        d_B = B.new_zeros(len(ranges), *B.shape)
        d_C = C.new_zeros(len(ranges), *C.shape)
        d_h0 = u.new_empty(batch, dim, n_state) if ctx.has_h0 else None
        common = (_ptr(delta), _ptr(u), _ptr(A), _ptr(B), _ptr(C), *_bc_layout(B, dim), *_bc_layout(C, dim),
                  _ptr(delta_bias), int(ctx.delta_softplus), _ptr(D), _ptr(z), _ptr(restart),
                  _ptr(checkpoints), _ptr(d_out), _ptr(d_last),
                  _ptr(d_delta), _ptr(d_u), _ptr(d_z), _ptr(d_bias_rows), _ptr(d_D_rows))
        _run(lib.selective_scan_backward, ranges,
             lambda i: (*common, _ptr(d_A[i]), _ptr(d_B[i]), _ptr(d_C[i]), _ptr(d_h0), dim, length))
        return (d_delta, d_u, d_A.sum(0), d_B.sum(0), d_C.sum(0),
                None if D is None else d_D_rows.sum(0), d_z,
                None if delta_bias is None else d_bias_rows.sum(0), d_h0, None, None)


def _as_groups(X: torch.Tensor, batch: int, dim: int, length: int, n_state: int, name: str) -> torch.Tensor:
    """B or C in any accepted layout -> float32 contiguous (batch|1, G, L|1, N), plus a clear error for bad shapes."""
    if X.dim() == 2 and tuple(X.shape) == (dim, n_state):      # time-invariant: one group per channel
        return X.float()[None, :, None, :].contiguous()
    if X.dim() == 3 and tuple(X.shape) == (batch, n_state, length):
        return X.float().transpose(1, 2)[:, None].contiguous()
    if X.dim() == 4 and X.shape[0] == batch and tuple(X.shape[2:]) == (n_state, length) and X.shape[1] >= 1:
        if dim % X.shape[1]:
            raise ValueError(f"selective_scan: dim {dim} is not divisible by the number of B/C groups {X.shape[1]}")
        return X.float().transpose(2, 3).contiguous()
    raise ValueError(f"selective_scan: {name} has shape {tuple(X.shape)}; expected ({dim}, {n_state}), "
                     f"({batch}, {n_state}, {length}) or ({batch}, G, {n_state}, {length}) with G dividing {dim}")


def _check_shapes(u, delta, A, D, z, delta_bias, initial_state):
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, _ = u.shape
    expected = {"delta": (delta, tuple(u.shape)), "z": (z, tuple(u.shape)), "D": (D, (dim,)),
                "delta_bias": (delta_bias, (dim,)), "initial_state": (initial_state, (batch, dim, A.shape[-1]))}
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be ({dim}, N), got shape {tuple(A.shape)}")
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"selective_scan: {name} has shape {tuple(tensor.shape)}; expected {shape}")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, seq_idx=None):
    """Same arguments and results as ``ops.selective_scan.reference.selective_scan``; CPU tensors only.

    seq_idx (batch, L): packed documents, reset inside the kernel (no per-document gather, no padding)."""
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (real A only, as in Mamba-1 language models)")
    _check_shapes(u, delta, A, D, z, delta_bias, initial_state)
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan: the CPU kernel needs CPU tensors, got device {u.device.type!r}")
    batch, dim, length = u.shape
    n_state = A.shape[1]
    if not available(n_state):
        raise ValueError(f"selective_scan: the CPU kernel is unavailable here ({unavailable_reason(n_state)})")
    B4 = _as_groups(B, batch, dim, length, n_state, "B")
    C4 = _as_groups(C, batch, dim, length, n_state, "C")
    if length == 0 or batch * dim == 0:
        state = initial_state.float() if initial_state is not None else u.new_zeros(batch, dim, n_state).float()
        return (u.new_zeros(u.shape), state) if return_last_state else u.new_zeros(u.shape)

    def f32(t):
        return None if t is None else t.float().contiguous()

    out, last = _Scan.apply(f32(delta), f32(u), f32(A), B4, C4, f32(D), f32(z), f32(delta_bias), f32(initial_state),
                            restart_flags(seq_idx, u), bool(delta_softplus))
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out

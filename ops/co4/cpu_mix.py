"""Co4's running top-k and its small attention over [latent rows; top-k rows], fused, on CPU (cpu_mix_kernel.c).

``co4_mix_cpu(m_q, m_k, m_v, lat_q, lat_k, lat_v, k, num_heads, scale, latent_mean, initial, initial_count)``
returns (mix, last): mix (B, T, D) is the attention part of Co4's output (each channel's output of the row of its
own rank in the top-k of M_V, 0 where the token is not in it, plus the latent rows' mean output when
``latent_mean``); last (3, B, k, D) the tables of M_Q, M_K, M_V after the last token, -inf in unfilled rows.
m_* (B, T, D); lat_* (B, T, L, D) rows per token, or (L, D) shared by all; initial (3, B, k, D) with
``initial_count`` filled rows (a decoding cache: it gets no gradient), or None; with ``prefix=True`` the latent
arguments are instead co4_latent_cpu's inputs and the kernel makes the rows that read the prefix itself, from each
batch row's running sums, so no (B, T, L, D) rows or gradients exist. zoo/blocks/co4.py's PyTorch path
(ops.running_topk, then ``Co4._attend``) is the definition it is tested against.

Why fused: the PyTorch path materialises the (B, T, k, D) top-k rows of three streams, the (B, T, H, L + k, E)
rows and the (L + k)^2 scores of every token, dozens of full-size tensors per step; the kernel keeps each batch
row's tables and one token's rows in cache and computes only the rows that are read. The backward sweeps the
tokens again, recomputing the tables (their entries carry the gradients); the attention weights of the rows read
the forward saves for it when a gradient is wanted and they take at most SAVED_WEIGHTS_MAX_BYTES (B T heads
(L + k)^2 numbers: 13 MB a layer at the CPU preset), else the backward recomputes them (the same numbers, bit for
bit). float32 and float64 run as they are (one library each, built at first use by ops._native); 16-bit inputs run
in float32, the results cast back.

Threads: each kernel call loops over its batch rows on one thread; with ``torch.get_num_threads() > 1`` the batch
is cut into min(threads, B) contiguous slices, one kernel call each at once (the first on the calling thread, the
others on a module-level pool; ctypes drops the GIL).
Gradients the kernels accumulate over batch rows (the latents' base, shared (L, D) rows) get a zero-filled buffer
per slice, added up in slice order after, so results are deterministic for a given thread count; the (3, B, k, D)
tables are copied per slice. One thread, B == 1 or fewer than MIN_THREADED_TOKENS tokens in all (decoding): one
call over the whole batch.
"""
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ops._native import NativeKernel, pointer as _ptr

KERNEL_SOURCE = Path(__file__).with_name("cpu_mix_kernel.c")
LATENT_SOURCE = Path(__file__).with_name("cpu_latent_kernel.c")
MAX_ROWS = 4096  # latents + k: the kernel's per-head row flags live on its stack
# the forward keeps the attention weights for the backward up to this size (saves ~20% of the backward at the CPU
# preset); past it the backward recomputes them
SAVED_WEIGHTS_MAX_BYTES = 256 * 2 ** 20
MIN_THREADED_TOKENS = 256  # fewer batch rows x tokens run as one call: a thread's hand-off costs ~50-100 us
_REAL = {torch.float32: "float", torch.float64: "double"}
_p, _i = ctypes.c_void_p, ctypes.c_int64
_ARGS = [_p] * 6 + [_i, _p, _i] + [_i] * 6 + [ctypes.c_double, _i] + [_p] * 16
_LATENT_ARGS = [_p] * 3 + [_i] * 4 + [_p] * 16
# one library per floating type (-DREAL=float|double) of each source
_MIX = NativeKernel(KERNEL_SOURCE, {"co4_mix": (_ARGS, ctypes.c_int)})
_LATENT = NativeKernel(LATENT_SOURCE, {"co4_latent": (_LATENT_ARGS, ctypes.c_int)})
_pool: ThreadPoolExecutor | None = None  # made at the first call that runs batch slices on several threads
_pool_pid = 0


def _library(dtype: torch.dtype):
    return _MIX.library(REAL=_REAL[dtype])


def _latent_library(dtype: torch.dtype):
    return _LATENT.library(REAL=_REAL[dtype])


def available() -> bool:
    """Both kernels (the mix and the latent rows) build here, in both dtypes."""
    return all(kernel.available(REAL=real) for kernel in (_MIX, _LATENT) for real in _REAL.values())


def unavailable_reason() -> str | None:
    return next(filter(None, (kernel.unavailable_reason(REAL=real) for kernel in (_MIX, _LATENT)
                              for real in _REAL.values())), None)


def _slices(B: int, T: int) -> list | None:
    """The batch rows cut into min(torch's threads, B) contiguous (begin, end) ranges, or None for one call (one
    thread, one batch row, or under MIN_THREADED_TOKENS tokens in all: decoding steps)."""
    workers = min(torch.get_num_threads(), B)
    if workers <= 1 or B * T < MIN_THREADED_TOKENS:
        return None
    bounds = [B * i // workers for i in range(workers + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _in_parallel(calls: list) -> list:
    """Run zero-argument calls (kernel calls: ctypes drops the GIL) at once, the first on this thread and the others
    on the module's pool; their results in order, once all have returned (none still writes when this returns, even
    when one raised)."""
    global _pool, _pool_pid
    # a new pool when more workers are wanted, and after a fork (the child inherits the pool but not its threads)
    if _pool is None or _pool._max_workers < len(calls) - 1 or _pool_pid != os.getpid():
        _pool, _pool_pid = ThreadPoolExecutor(max_workers=len(calls) - 1, thread_name_prefix="co4-cpu"), os.getpid()
    futures = [_pool.submit(call) for call in calls[1:]]
    try:
        first = calls[0]()
    finally:
        wait(futures)
    return [first] + [future.result() for future in futures]


def _cut(t, b0, b1):
    return None if t is None else t[b0:b1]


def _private(buffers, slices) -> list:
    """Per slice, its own zero-filled copy of each buffer the kernel accumulates over batch rows (None stays None);
    the first slice writes the caller's (zero-filled) buffer itself."""
    return [buffers] + [[None if t is None else torch.zeros_like(t) for t in buffers] for _ in slices[1:]]


def _sum_into(buffers, private) -> None:
    """Add the other slices' buffers into the first's, in slice order (deterministic for a given thread count)."""
    for own in private[1:]:
        for total, part in zip(buffers, own):
            if total is not None:
                total.add_(part)


def _latent_count(lat, prefix: bool) -> int:
    """L: the read weights' last size with ``prefix`` (lat = projected, weight, base), else the rows' second-last."""
    return lat[1].shape[-1] if prefix else lat[0].shape[-2]


def _run(dtype, m, lat, initial, initial_count, k, num_heads, scale, latent_mean, prefix, y=None, last=None,
         dy=None, d_m=(None,) * 3, d_lat=(None,) * 3, weights=None):
    """lat: the rows (q, k, v), or with ``prefix`` (projected, weight, base), their gradients d_lat alike;
    weights (B, T * heads * (L + k)^2) or None: written by the forward, read by the backward. With
    several torch threads the batch rows run as contiguous slices, one kernel call each, on as many threads."""
    B, T, D = m[0].shape
    L = _latent_count(lat, prefix)
    per_token = int(not prefix and lat[0].dim() == 4)
    library = _library(dtype)

    def call(B, m, lat, initial, y, last, dy, d_m, d_lat, weights):
        rows, sums = ((None,) * 3, lat) if prefix else (lat, (None,) * 3)
        d_rows, d_sums = ((None,) * 3, d_lat) if prefix else (d_lat, (None,) * 3)
        return library.co4_mix(*map(_ptr, m), *map(_ptr, rows), per_token, _ptr(initial), initial_count, B, T, D,
                               L, k, num_heads, scale, int(latent_mean), _ptr(y), _ptr(last), _ptr(dy),
                               *map(_ptr, d_m), *map(_ptr, d_rows), *map(_ptr, sums), *map(_ptr, d_sums),
                               _ptr(weights))

    slices = _slices(B, T)
    if slices is None:
        codes = [call(B, m, lat, initial, y, last, dy, d_m, d_lat, weights)]
    else:
        # per batch row: m, y, dy, d_m; prefix: lat_p, lat_w and d_p, d_w; per-token rows and their gradients.
        # Shared: lat_base (read only) and (L, D) rows; what accumulates over batch rows (d_base, shared rows'
        # gradients) gets a buffer per slice, summed after. initial, last (3, B, k, D): a contiguous copy each.
        shared = (2,) if prefix else () if per_token else (0, 1, 2)
        accumulated = [d_lat[i] if i in shared and d_lat[i] is not None else None for i in range(3)]
        private = _private(accumulated, slices)
        lasts = [None if last is None else last[:, b0:b1].contiguous() for b0, b1 in slices]
        calls = []
        for (b0, b1), own, own_last in zip(slices, private, lasts):
            calls.append(partial(
                call, b1 - b0, [t[b0:b1] for t in m],
                [t if i in shared else t[b0:b1] for i, t in enumerate(lat)],
                None if initial is None else initial[:, b0:b1].contiguous(), _cut(y, b0, b1), own_last,
                _cut(dy, b0, b1), [_cut(t, b0, b1) for t in d_m],
                [own[i] if i in shared else _cut(t, b0, b1) for i, t in enumerate(d_lat)], _cut(weights, b0, b1)))
        codes = _in_parallel(calls)
        _sum_into(accumulated, private)
        if last is not None:
            for (b0, b1), own_last in zip(slices, lasts):
                last[:, b0:b1] = own_last
    code = next((c for c in codes if c), 0)
    if code:
        raise RuntimeError(f"co4_mix kernel failed (code {code}: {'out of memory' if code == 1 else 'L + k > 4096'})")


class _Co4Mix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m_q, m_k, m_v, lat_q, lat_k, lat_v, initial, initial_count, k, num_heads, scale, latent_mean,
                prefix):
        B, T, D = m_q.shape
        y = m_q.new_empty(B, T, D)
        last = m_q.new_full((3, B, k, D), float("-inf"))
        R = _latent_count((lat_q, lat_k, lat_v), prefix) + k
        size = B * T * num_heads * R * R  # a bound: only the used rows' n <= R weights are written
        weights = (m_q.new_empty(B, size // B) if any(ctx.needs_input_grad)
                   and size * m_q.element_size() <= SAVED_WEIGHTS_MAX_BYTES else None)
        _run(m_q.dtype, (m_q, m_k, m_v), (lat_q, lat_k, lat_v), initial, initial_count, k, num_heads, scale,
             latent_mean, prefix, y=y, last=last, weights=weights)
        ctx.save_for_backward(m_q, m_k, m_v, lat_q, lat_k, lat_v, initial)
        ctx.weights = weights
        ctx.settings = (initial_count, k, num_heads, scale, latent_mean, prefix)
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _):
        m_q, m_k, m_v, lat_q, lat_k, lat_v, initial = ctx.saved_tensors
        initial_count, k, num_heads, scale, latent_mean, prefix = ctx.settings
        lat = (lat_q, lat_k, lat_v)
        d_m = [torch.zeros_like(m_q) for _ in range(3)]
        if dy is None:
            return (*d_m, *map(torch.zeros_like, lat)) + (None,) * 7
        # per-token rows' gradients are written whole by the kernel; shared rows' and the sums' are accumulated
        fill = torch.empty_like if lat_q.dim() == 4 and not prefix else torch.zeros_like
        d_lat = [fill(t) for t in lat]
        _run(m_q.dtype, (m_q, m_k, m_v), lat, initial, initial_count, k, num_heads, scale, latent_mean, prefix,
             dy=dy.to(m_q.dtype).contiguous(), d_m=d_m, d_lat=d_lat, weights=ctx.weights)
        ctx.weights = None
        return (*d_m, *d_lat) + (None,) * 7


def co4_mix_cpu(m_q, m_k, m_v, lat_q, lat_k, lat_v, k: int, num_heads: int, scale: float, latent_mean: bool,
                initial=None, initial_count: int = 0, prefix: bool = False):
    """(mix (B, T, D), last (3, B, k, D)); see the module docstring. With ``prefix`` the latent arguments are
    co4_latent_cpu's inputs (projected (B, T, 3D), weight (B, T, L), base (L, 3D)): the kernel makes the rows
    that read the prefix itself, token by token, and returns their gradients to those inputs."""
    dtype = m_q.dtype
    compute = dtype if dtype in _REAL else torch.float32
    B, T, D = m_q.shape
    L = _latent_count((lat_q, lat_k, lat_v), prefix)
    if D % num_heads:
        raise ValueError(f"co4_mix_cpu: num_heads={num_heads} must divide D={D}")
    if L + k > MAX_ROWS:
        raise ValueError(f"co4_mix_cpu: latents + k = {L + k} rows exceed {MAX_ROWS}")
    if prefix:
        shapes = tuple(tuple(t.shape) for t in (lat_q, lat_k, lat_v))
        if shapes != ((B, T, 3 * D), (B, T, L), (L, 3 * D)):
            raise ValueError(f"co4_mix_cpu: prefix latents must be (B, T, 3D), (B, T, L), (L, 3D), got {shapes}")
    elif lat_q.dim() == 4 and tuple(lat_q.shape) != (B, T, L, D) or lat_q.dim() == 2 and lat_q.shape[1] != D:
        raise ValueError(f"co4_mix_cpu: latent rows must be (B, T, L, D) or (L, D), got {tuple(lat_q.shape)}")
    m = [t.to(compute).contiguous() for t in (m_q, m_k, m_v)]
    lat = [t.to(compute).contiguous() for t in (lat_q, lat_k, lat_v)]
    initial = initial.detach().to(compute).contiguous() if initial is not None and initial_count else None
    y, last = _Co4Mix.apply(*m, *lat, initial, initial_count if initial is not None else 0, k, num_heads,
                            float(scale), bool(latent_mean), bool(prefix))
    return y.to(dtype), last.to(dtype)


# ---- the latent rows that read the prefix (cpu_latent_kernel.c) ---------------------------------------------------
def _latent_run(projected, weight, base, outputs=(None,) * 6, grads=(None,) * 6, d_p=None, d_w=None, d_base=None,
                scratch=None):
    """With several torch threads the batch rows run as contiguous slices, as in ``_run``: d_base (accumulated over
    batch rows) and the per-call scratch are each slice's own; base is shared, the rest per batch row."""
    B, T, W = projected.shape
    library = _latent_library(projected.dtype)

    def call(B, projected, weight, outputs, grads, d_p, d_w, d_base, scratch):
        return library.co4_latent(_ptr(projected), _ptr(weight), _ptr(base), B, T, W // 3, weight.shape[-1],
                                  *map(_ptr, outputs), *map(_ptr, grads), _ptr(d_p), _ptr(d_w), _ptr(d_base),
                                  _ptr(scratch))

    slices = _slices(B, T)
    if slices is None:
        codes = [call(B, projected, weight, outputs, grads, d_p, d_w, d_base, scratch)]
    else:
        private = _private([d_base], slices)
        scratches = [scratch] + [None if scratch is None else torch.empty_like(scratch) for _ in slices[1:]]
        codes = _in_parallel([
            partial(call, b1 - b0, projected[b0:b1], weight[b0:b1], [_cut(t, b0, b1) for t in outputs],
                    [_cut(t, b0, b1) for t in grads], _cut(d_p, b0, b1), _cut(d_w, b0, b1), own_base, own_scratch)
            for (b0, b1), (own_base,), own_scratch in zip(slices, private, scratches)])
        _sum_into([d_base], private)
    if any(codes):
        raise RuntimeError("co4_latent kernel failed: out of memory")


class _Co4Latent(torch.autograd.Function):
    @staticmethod
    def forward(ctx, projected, weight, base, with_rows):
        B, T, W = projected.shape
        L, D = weight.shape[-1], W // 3
        rows = [projected.new_empty(B, T, L, D) for _ in range(3)] if with_rows else [None] * 3
        stats = [projected.new_empty(B, T, D) for _ in range(3)]
        _latent_run(projected, weight, base, outputs=(*rows, *stats))
        ctx.save_for_backward(projected, weight, base)
        ctx.with_rows = with_rows
        return (*rows, *stats) if with_rows else tuple(stats)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        projected, weight, base = ctx.saved_tensors
        if not ctx.with_rows:
            grads = (None,) * 3 + grads
        B, T, W = projected.shape
        L, D = weight.shape[-1], W // 3
        # each group (the rows, the statistics) goes to the kernel whole, or not at all when none has a gradient
        groups = []
        for group, shape in ((grads[:3], (B, T, L, D)), (grads[3:], (B, T, D))):
            if all(g is None for g in group):
                groups += [None] * 3
            else:
                groups += [projected.new_zeros(shape) if g is None else g.to(projected.dtype).contiguous()
                           for g in group]
        d_p, d_w, d_base = torch.zeros_like(projected), torch.zeros_like(weight), torch.zeros_like(base)
        _latent_run(projected, weight, base, grads=groups, d_p=d_p, d_w=d_w, d_base=d_base,
                    scratch=projected.new_empty(T * L * (W + 1)))
        return d_p, d_w, d_base, None


def co4_latent_cpu(projected, weight, base, rows: bool = True):
    """Co4's latent rows that read the prefix and the modulation's statistics, compiled; see cpu_latent_kernel.c.

    projected (B, T, 3D) the tokens' q|k|v projections without the bias; weight (B, T, L) how much each latent reads
    each token; base (L, 3D) the latent tokens' own q|k|v. Returns (lq, lk, lv (B, T, L, D) each: base plus the
    weighted mean of the projections s <= t; mq, mk (B, T, D) the means over the latents of lq and lk; cv (B, T, D)
    the mean of lq * lk * (1 + |lv|)), in projected's dtype (computed in weight's, float32 for 16-bit inputs).
    ``rows=False``: the three statistics only (co4_mix_cpu's ``prefix`` mode makes the rows)."""
    dtype = projected.dtype
    compute = weight.dtype if weight.dtype in _REAL else torch.float32
    outputs = _Co4Latent.apply(projected.to(compute).contiguous(), weight.to(compute).contiguous(),
                               base.to(compute).contiguous(), bool(rows))
    return tuple(t.to(dtype) for t in outputs)

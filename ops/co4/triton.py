"""Fused Triton kernels for the causal running top-k (see reference.py for the definition), forward and backward.

Work split: one program per (channel tile, batch row) walks the T steps in order with each channel's k-best list
in registers: per slot its ranking key, value, source and rank (the row it occupies). The list is kept unsorted;
a new entry takes the slot of the one it evicts (or the next empty slot), and the ranks of the slots it passes
move down one, so a step is O(k) elementwise work with no shifting or sorting. Each step writes the k rows
straight to their ranks (row r of token t at TOP[b, t, r]), the token's own rank, and optionally the sources.
Empty slots hold "virtual" ranks (slot j sits at row j until filled), so every row is written at every step,
zeros where the prefix cannot fill it yet, and nothing of size T x T is built. Few warps run per SM (one warp
per 32 channels and batch row), so each load is issued one step before its use: a step's work hides it.

Long sequences (``running_topk_triton``) run parallel in time: each chunk's own table (LAST_ONLY launches), the
running top-k over those tables (the table carried into each chunk), then every chunk from its carried table;
see ``_parallel_in_time``.

Backward replays the same list (the keys are recomputed from the inputs, so no indices are saved) and gives each
slot a gradient accumulator: while an entry sits in the list it collects the incoming gradient of the row it
occupies; when it is evicted, or at the end, the sum is written once to its source. Every source is written at
most once, so there are no atomics; sources that never entered keep the zeros the buffer starts with.
"""
import torch
import triton
import triton.language as tl

from ops._backend import triton_interpreting


# Channels per program under the interpreter, which runs programs one after another and pays per NumPy call, not
# per element: wide tiles keep the block tests fast. The op's tests set 16 so small widths span ragged tiles.
INTERPRETER_CHANNELS = 128


def launch_config(k: int):
    """(padded slots, channels per program, warps). One warp; each channel's list spread over 32 / BLOCK_C lanes
    so that a lane holds at most 16 slots: up to k = 16 one lane holds a whole list (ranking needs no shuffle),
    beyond that the lanes of a channel share it (a few shuffles per step) instead of spilling, which 32 slots per
    lane did (sm_90: 24-544 spilled bytes at k = 32, up to 18 kB at k = 64)."""
    slots = triton.next_power_of_2(k)
    if triton_interpreting():
        return slots, INTERPRETER_CHANNELS, 1
    return slots, max(8, min(32, 512 // slots)), 1


@triton.jit
def _key(x):
    """ranking_key: the value rounded to bfloat16 (to nearest, ties to even, as torch rounds), kept in float32.
    Rounded on the bits rather than by a cast: Triton's interpreter casts float32 -> bfloat16 by truncation, and
    the kernel must rank the same way on both. float64 goes through float32 first, as in torch."""
    bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_next(X, seq, t, T, C, cols, col_ok, BLOCK_C: tl.constexpr):
    """Token t + 1's values (zeros past the end). The bound is a tensor: the interpreter rejects a scalar mask."""
    more = tl.full([BLOCK_C], t + 1, dtype=tl.int32) < T
    return tl.load(X + seq + (t + 1) * C + cols, mask=col_ok & more, other=0.0)


@triton.jit
def _start(INIT, pid_b, C, initial_count, cols, col_ok, K: tl.constexpr, KP: tl.constexpr,
           HAS_INIT: tl.constexpr, dtype: tl.constexpr, BLOCK_C: tl.constexpr):
    """The list before the first token: the initial table's slots (sources 0..K-1) in rank order, -inf keys on
    empty slots; slot j's rank is j (the padded slots j >= K keep ranks >= K and never take part)."""
    slot = tl.arange(0, KP)[:, None]
    rank = slot + tl.zeros([KP, BLOCK_C], dtype=tl.int32)
    src = rank
    if HAS_INIT:
        # one slot's row at a time: a (KP, BLOCK_C) load would be laid out for coalescing (slots across lanes),
        # and the list would inherit that layout: shuffles and shared-memory round trips at every step (sm_90,
        # compiled as launched: 179 -> 241 registers, 6 barriers and 24 shuffles per step in the backward)
        val = tl.zeros([KP, BLOCK_C], dtype=dtype)
        for j in tl.static_range(K):
            present = col_ok & (tl.full([BLOCK_C], j, dtype=tl.int32) < initial_count)
            row = tl.load(INIT + pid_b.to(tl.int64) * K * C + j * C + cols, mask=present, other=0.0)
            val = tl.where(slot == j, row[None, :], val)
        key = tl.where((slot < initial_count) & col_ok[None, :], _key(val), float("-inf"))
    else:
        val = tl.zeros([KP, BLOCK_C], dtype=dtype)
        key = tl.full([KP, BLOCK_C], float("-inf"), dtype=tl.float32)
    return key, val, src, rank


@triton.jit
def _place(key, rank, count, x_key, K: tl.constexpr, KP: tl.constexpr):
    """Where the new entry goes: its rank r among the filled slots (ties: the stored, earlier ones win), whether it
    enters (r < K), and the slot it takes (the empty slot at row ``count`` or the evicted one at row K - 1: both
    are the slot whose rank is min(count, K - 1))."""
    slot = tl.arange(0, KP)[:, None]
    filled = slot < count
    r = tl.sum((filled & (key >= x_key[None, :])).to(tl.int32), axis=0)
    enter = r < K
    target = (rank == tl.minimum(count, K - 1)) & enter[None, :]
    moved = filled & (rank >= r[None, :]) & enter[None, :] & ~target
    return r, enter, target, tl.where(target, r[None, :], tl.where(moved, rank + 1, rank))


@triton.jit
def _topk_fwd_kernel(X, INIT, TOP, RANK, INDEX, T, C, initial_count,
                     K: tl.constexpr, KP: tl.constexpr, HAS_INIT: tl.constexpr, STORE_INDEX: tl.constexpr,
                     LAST_ONLY: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_c, pid_b = tl.program_id(0), tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    slot = tl.arange(0, KP)[:, None]
    seq = pid_b.to(tl.int64) * T * C
    key, val, src, rank = _start(INIT, pid_b, C, initial_count, cols, col_ok, K, KP, HAS_INIT,
                                 X.dtype.element_ty, BLOCK_C)
    count = initial_count
    x = tl.load(X + seq + cols, mask=col_ok, other=0.0)
    for t in range(0, T):
        # the next token's load does not depend on the list: issue it a step early, so its latency hides behind
        # this step's work (few warps per SM here: nothing else would hide it)
        x_next = _load_next(X, seq, t, T, C, cols, col_ok, BLOCK_C)
        x_key = _key(x)
        r, enter, target, rank = _place(key, rank, count, x_key, K, KP)
        key = tl.where(target, x_key[None, :], key)
        val = tl.where(target, x[None, :], val)
        src = tl.where(target, K + t, src)
        count = tl.minimum(count + 1, K)
        if not LAST_ONLY:
            # rows of this step: (b, t, r, c) at ((b * T + t) * K + r) * C + c, int64 (B*T*K*C passes 2^31)
            row = (seq + t * C) * K + rank.to(tl.int64) * C + cols[None, :]
            out_ok = (rank < K) & col_ok[None, :]
            tl.store(TOP + row, tl.where(slot < count, val, 0.0), mask=out_ok)
            if STORE_INDEX:
                tl.store(INDEX + row, tl.where(slot < count, src, -1), mask=out_ok)
            tl.store(RANK + seq + t * C + cols, tl.where(enter, r, K), mask=col_ok)
        x = x_next
    if LAST_ONLY:
        # only the table after the last token: (b, r, c) at (b * K + r) * C + c
        row = pid_b.to(tl.int64) * K * C + rank.to(tl.int64) * C + cols[None, :]
        tl.store(TOP + row, tl.where(slot < count, val, 0.0), mask=(rank < K) & col_ok[None, :])


@triton.jit
def _flush(DX, DINIT, acc, src, which, pid_b, seq, C, cols, K: tl.constexpr, HAS_INIT: tl.constexpr):
    """Write the gradient gathered by the slots in ``which`` to their sources: a token, or an initial slot."""
    token = src >= K
    tl.store(DX + seq + (src - K).to(tl.int64) * C + cols[None, :], acc, mask=which & token)
    if HAS_INIT:
        tl.store(DINIT + pid_b.to(tl.int64) * K * C + src * C + cols[None, :], acc, mask=which & ~token)


@triton.jit
def _topk_bwd_kernel(X, INIT, DTOP, DX, DINIT, T, C, initial_count,
                     K: tl.constexpr, KP: tl.constexpr, HAS_INIT: tl.constexpr, LAST_ONLY: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    pid_c, pid_b = tl.program_id(0), tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    slot = tl.arange(0, KP)[:, None]
    seq = pid_b.to(tl.int64) * T * C
    key, val, src, rank = _start(INIT, pid_b, C, initial_count, cols, col_ok, K, KP, HAS_INIT,
                                 X.dtype.element_ty, BLOCK_C)
    acc = tl.zeros([KP, BLOCK_C], dtype=DX.dtype.element_ty)  # float32, float64 for float64 inputs
    pending = tl.zeros([KP, BLOCK_C], dtype=DTOP.dtype.element_ty)
    count = initial_count
    x = tl.load(X + seq + cols, mask=col_ok, other=0.0)
    for t in range(0, T):
        # loads are used one step after they are issued, so their latency hides behind a step's work: the next
        # token (independent of the list), and the previous step's row gradients (``pending``), added only now
        x_next = _load_next(X, seq, t, T, C, cols, col_ok, BLOCK_C)
        x_key = _key(x)
        r, enter, target, rank_next = _place(key, rank, count, x_key, K, KP)
        if not LAST_ONLY:  # with only the last table differentiated, evicted entries have no gradient
            acc += pending.to(acc.dtype)
            # the evicted entry leaves for good: its gradient is complete
            _flush(DX, DINIT, acc, src, target & (slot < count) & col_ok[None, :], pid_b, seq, C, cols, K,
                   HAS_INIT)
            acc = tl.where(target, 0.0, acc)
        key = tl.where(target, x_key[None, :], key)
        src = tl.where(target, K + t, src)
        rank = rank_next
        count = tl.minimum(count + 1, K)
        if not LAST_ONLY:
            held = (slot < count) & (rank < K) & col_ok[None, :]
            row = (seq + t * C) * K + rank.to(tl.int64) * C + cols[None, :]
            pending = tl.load(DTOP + row, mask=held, other=0.0)
        x = x_next
    if LAST_ONLY:
        row = pid_b.to(tl.int64) * K * C + rank.to(tl.int64) * C + cols[None, :]
        pending = tl.load(DTOP + row, mask=(slot < count) & (rank < K) & col_ok[None, :], other=0.0)
    acc += pending.to(acc.dtype)
    _flush(DX, DINIT, acc, src, (slot < count) & col_ok[None, :], pid_b, seq, C, cols, K, HAS_INIT)


# Set by tests: fill fresh output buffers with NaN (integer ones with -2, which no rank or index takes) so that any
# entry a kernel forgets to write shows up.
FILL_FRESH_BUFFERS_WITH_NAN = False


def _new_buffer(*shape, dtype, device) -> torch.Tensor:
    if FILL_FRESH_BUFFERS_WITH_NAN:
        return torch.full(shape, float("nan") if dtype.is_floating_point else -2, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _grid(B: int, C: int, block_c: int):
    return (triton.cdiv(C, block_c), B)


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _RunningTopk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, initial, k: int, initial_count: int, return_indices: bool, last_only: bool = False):
        """(top, rank, index); with ``last_only`` just (the table after the last token (B, k, C), None, None)."""
        values = values.contiguous()
        initial = initial.contiguous() if initial is not None else None
        B, T, C = values.shape
        KP, block_c, warps = launch_config(k)
        top = _new_buffer(*((B, k, C) if last_only else (B, T, k, C)), dtype=values.dtype, device=values.device)
        rank = None if last_only else _new_buffer(B, T, C, dtype=torch.int64, device=values.device)
        index = _new_buffer(B, T, k, C, dtype=torch.int64, device=values.device) if return_indices else None
        _topk_fwd_kernel[_grid(B, C, block_c)](
            values, initial, top, rank, index, T, C, initial_count, K=k, KP=KP, HAS_INIT=initial is not None,
            STORE_INDEX=return_indices, LAST_ONLY=last_only, BLOCK_C=block_c, num_warps=warps)
        ctx.save_for_backward(values, initial)
        ctx.k, ctx.initial_count, ctx.last_only = k, initial_count, last_only
        ctx.mark_non_differentiable(*[t for t in (rank, index) if t is not None])
        return top, rank, index

    @staticmethod
    def backward(ctx, grad_top, *_):
        values, initial = ctx.saved_tensors
        B, T, C = values.shape
        k = ctx.k
        KP, block_c, warps = launch_config(k)
        accumulation = _accumulation(values.dtype)
        grad_values = torch.zeros(B, T, C, dtype=accumulation, device=values.device)
        grad_initial = torch.zeros(B, k, C, dtype=accumulation, device=values.device) if initial is not None else None
        if grad_top is not None:
            _topk_bwd_kernel[_grid(B, C, block_c)](
                values, initial, grad_top.contiguous(), grad_values, grad_initial, T, C, ctx.initial_count,
                K=k, KP=KP, HAS_INIT=initial is not None, LAST_ONLY=ctx.last_only, BLOCK_C=block_c, num_warps=warps)
        grad_initial = grad_initial.to(initial.dtype) if initial is not None else None
        return grad_values.to(values.dtype), grad_initial, None, None, None, None


# Tokens per time chunk of the parallel form (None: chosen from T and k by _time_chunk); tests set it small.
TIME_CHUNK = None


def _time_chunk(T: int, k: int) -> int:
    """The serial depth of the parallel form is about 2 * chunk + (T / chunk) * k steps: smallest near
    sqrt(T * k / 2); a power of two, at least 2 * k so that every chunk before the last fills a table."""
    if TIME_CHUNK is not None:
        return max(TIME_CHUNK, k)
    return max(2 * k, triton.next_power_of_2(int((T * k / 2) ** 0.5)))


def _parallel_in_time(values, k, initial, initial_count):
    """The running top-k with the time axis split in chunks, in three launches whose programs all run at once:
    (1) each chunk's own top-k table; (2) the running top-k over those tables, taken as a sequence (entries of
    earlier chunks first, each table in rank order, so ties still go to the earlier token), which gives the table
    carried into every chunk; (3) each chunk again, from its carried table. The top-k of a union is associative,
    so this is exact; its serial depth is about 2 * chunk + (T / chunk) * k steps instead of T, with B * C / 32 *
    (T / chunk) programs instead of B * C / 32. Autograd chains the three launches' backward kernels."""
    B, T, C = values.shape
    chunk = _time_chunk(T, k)
    n = triton.cdiv(T, chunk)
    padded = torch.cat([values, values.new_zeros(B, n * chunk - T, C)], 1) if n * chunk > T else values
    chunks = padded.view(B, n, chunk, C)
    # (1) the tables of chunks 0 .. n-2 (the last one's is never carried), stored once, not at every step
    local, _, _ = _RunningTopk.apply(chunks[:, :-1].reshape(B * (n - 1), chunk, C), None, k, 0, False, True)
    tables = local.view(B, (n - 1) * k, C)
    # (2) after the last entry of table c: the top-k of everything up to the end of chunk c
    merged, _, _ = _RunningTopk.apply(tables, initial, k, initial_count, False)
    carried = merged.view(B, n - 1, k, k, C)[:, :, -1]                                  # (B, n - 1, k, C)
    # (3) chunk 0 from the caller's table; chunks 1 .. n-1 from full carried tables
    first, first_rank, _ = _RunningTopk.apply(chunks[:, 0], initial, k, initial_count, False)
    rest, rest_rank, _ = _RunningTopk.apply(chunks[:, 1:].reshape(B * (n - 1), chunk, C),
                                            carried.reshape(B * (n - 1), k, C), k, k, False)
    top = torch.cat([first, rest.view(B, (n - 1) * chunk, k, C)], 1)[:, :T]
    rank = torch.cat([first_rank, rest_rank.view(B, (n - 1) * chunk, C)], 1)[:, :T]
    return top, rank, None


def running_topk_triton(values, k, initial=None, initial_count=0, return_indices=False):
    """(top, rank, index or None) of the running top-k, fused; see ops/co4/reference.py for the definition.
    Long sequences run in parallel over time chunks (``_parallel_in_time``); the indices, which name sources in
    one launch's inputs, come from the single pass."""
    if not return_indices and values.shape[1] > 2 * _time_chunk(values.shape[1], k):
        return _parallel_in_time(values.contiguous(), k, initial, initial_count)
    return _RunningTopk.apply(values, initial, k, initial_count, return_indices)

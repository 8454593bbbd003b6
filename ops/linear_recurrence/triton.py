"""Fused Triton kernels for the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t, forward and backward.

a_t = exp(g_t); b_t = x_t (linear form) or exp(log_values_t) (log form, exponentiated in registers).

Work split: one program per (D-tile, batch row), scanning T in tiles of BLOCK_T rows. Each tile is loaded once
(coalesced along D), scanned in registers with ``tl.associative_scan`` over the pairs (a, b) (combine: decay
products and decayed sums), joined to the carried state, and written once: HBM traffic is one read of the inputs
and one write of h. Accumulation is float32 whatever the input dtype.

Backward: with dH_t the gradient reaching h_t from the output (and the final state at t = T-1), the total
gradient of h_t obeys the reverse recurrence with the coefficients shifted by one step,
    dh_t = dH_t + a_{t+1} * dh_{t+1},
run by the same tile scan on tiles loaded in reversed time order. Then dx_t = dh_t (times exp(log_values_t) in
the log form), dg_t = dh_t * a_t * h_{t-1} (h_{-1} = initial state, h read back from the forward output), and
d(initial_state) = a_0 * dh_0.
"""
import torch
import triton
import triton.language as tl

from ops._backend import triton_interpreting


def _configs():
    if triton_interpreting():  # one config: the interpreter would otherwise time every candidate
        return [triton.Config({"BLOCK_T": 32, "BLOCK_D": 16}, num_warps=1)]
    # narrow D tiles give many programs (B * D / BLOCK_D) to fill the SMs; few warps per tile keep more of each
    # column's rows in one thread, where the scan runs in registers without shared memory. Checked untimed with
    # `python -m ops.compile_check linear_recurrence --report` (sm_90, compiled as launched: bf16, B8 T2048 D1536):
    # every candidate below spills nothing; (64, 32, 1) has the fewest main-loop instructions per element (31.5
    # forward, 44.9 backward). Dropped: (128, 32, 1), whose backward spills 1212 bytes, and (64, 64, 2), whose
    # forward spills 56.
    shapes = [(32, 32, 1), (64, 32, 1), (64, 16, 2), (128, 16, 4), (32, 32, 2), (64, 32, 4), (128, 32, 4),
              (32, 64, 4), (32, 128, 4)]
    return [triton.Config({"BLOCK_T": block_t, "BLOCK_D": block_d}, num_warps=warps) for block_t, block_d, warps in shapes]


@triton.jit
def _compose(a_first, b_first, a_then, b_then):
    # applying (a_first, b_first) then (a_then, b_then) to a state h: a_then * (a_first * h + b_first) + b_then
    return a_first * a_then, a_then * b_first + b_then


@triton.jit
def _last_row(tile, rows, BLOCK_T: tl.constexpr):
    return tl.sum(tl.where(rows[:, None] == BLOCK_T - 1, tile, 0.0), axis=0)


@triton.jit
def _program_tile(T, D, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch row, its D columns (and which exist), the tile's row indices, and where its row starts
    in the contiguous (B, T, D) tensors."""
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    return pid_b, cols, cols < D, tl.arange(0, BLOCK_T), pid_b.to(tl.int64) * T * D


@triton.jit
def _row_or_zeros(ptr, pid_b, D, cols, col_ok, PRESENT: tl.constexpr, BLOCK_D: tl.constexpr):
    """An optional (B, D) input's row for this program, in float32; zeros when it is absent."""
    if PRESENT:
        return tl.load(ptr + pid_b * D + cols, mask=col_ok, other=0.0).to(tl.float32)
    return tl.zeros([BLOCK_D], dtype=tl.float32)


def _length_bucket(T: int) -> int:
    """The autotune key's view of the sequence length: the power of two at or above it (capped at 64k), so a
    config tuned on a short prefill is not reused at training lengths, without re-tuning for every length."""
    return min(triton.next_power_of_2(T), 1 << 16)


# T_BUCKET (= _length_bucket(T)) only keys the autotuner: the kernels do not read it.
@triton.autotune(configs=_configs(), key=["D", "T_BUCKET"])
@triton.jit
def _forward_kernel(X, G, H0, H, HT, T, D, T_BUCKET,
                    LOG_VALUES: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b, cols, col_ok, rows, seq = _program_tile(T, D, BLOCK_T, BLOCK_D)
    h = _row_or_zeros(H0, pid_b, D, cols, col_ok, HAS_H0, BLOCK_D)

    # No hand-written prefetch of the next tile: loading it before this tile's scan compiled (sm_90, bf16, B8 T2048
    # D1536) to 2-5% more main-loop instructions and up to 40 more registers (32x128: 3 -> 2 CTAs per SM) in every
    # candidate, so it waits for a GPU timing that shows the latency it hides is worth that.
    for start in range(0, T, BLOCK_T):
        t = start + rows
        ok = (t[:, None] < T) & col_ok[None, :]
        offs = seq + t[:, None] * D + cols[None, :]
        # rows past T get a = 1, b = 0: they carry the last state unchanged to the tile's last row
        a = tl.exp(tl.load(G + offs, mask=ok, other=0.0).to(tl.float32))
        b = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32)
        if LOG_VALUES:
            b = tl.where(ok, tl.exp(b), 0.0)
        a_cum, b_cum = tl.associative_scan((a, b), 0, _compose)
        h_tile = a_cum * h[None, :] + b_cum
        tl.store(H + offs, h_tile.to(H.dtype.element_ty), mask=ok)
        h = _last_row(h_tile, rows, BLOCK_T)

    if STORE_FINAL:
        tl.store(HT + pid_b * D + cols, h, mask=col_ok)


@triton.autotune(configs=_configs(), key=["D", "T_BUCKET"])
@triton.jit
def _backward_kernel(X, G, H, H0, DH, DHT, DX, DG, DH0, T, D, T_BUCKET,
                     LOG_VALUES: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHT: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b, cols, col_ok, rows, seq = _program_tile(T, D, BLOCK_T, BLOCK_D)
    carry = _row_or_zeros(DHT, pid_b, D, cols, col_ok, HAS_DHT, BLOCK_D)
    h0 = _row_or_zeros(H0, pid_b, D, cols, col_ok, HAS_H0, BLOCK_D)

    n_tiles = tl.cdiv(T, BLOCK_T)
    for i in range(0, n_tiles):
        # the same tiles as the forward, last first, each with its rows in decreasing time
        t = (n_tiles - 1 - i) * BLOCK_T + (BLOCK_T - 1 - rows)
        ok = (t[:, None] < T) & col_ok[None, :]
        offs = seq + t[:, None] * D + cols[None, :]
        next_ok = (t[:, None] + 1 < T) & col_ok[None, :]
        # a_{t+1}; 1 at t = T-1 (and past T) so the final-state gradient in `carry` reaches h_{T-1} undecayed
        a_next = tl.exp(tl.load(G + offs + D, mask=next_ok, other=0.0).to(tl.float32))
        dh_out = tl.load(DH + offs, mask=ok, other=0.0).to(tl.float32)
        a_cum, b_cum = tl.associative_scan((a_next, dh_out), 0, _compose)
        dh = a_cum * carry[None, :] + b_cum
        carry = _last_row(dh, rows, BLOCK_T)  # dh at the tile's earliest time

        a = tl.exp(tl.load(G + offs, mask=ok, other=0.0).to(tl.float32))
        prev_ok = ok & (t[:, None] > 0)
        h_prev = tl.load(H + offs - D, mask=prev_ok, other=0.0).to(tl.float32)
        h_prev = tl.where(t[:, None] == 0, h0[None, :], h_prev)
        tl.store(DG + offs, (dh * a * h_prev).to(DG.dtype.element_ty), mask=ok)
        if LOG_VALUES:
            dh = dh * tl.exp(tl.load(X + offs, mask=ok, other=0.0).to(tl.float32))
        tl.store(DX + offs, dh.to(DX.dtype.element_ty), mask=ok)

    if HAS_H0:
        # `carry` now holds dh_0
        a0 = tl.exp(tl.load(G + seq + cols, mask=col_ok, other=0.0).to(tl.float32))
        tl.store(DH0 + pid_b * D + cols, (a0 * carry).to(DH0.dtype.element_ty), mask=col_ok)


# Set by tests: fill fresh output buffers with NaN so that any entry a kernel forgets to write shows up.
FILL_FRESH_BUFFERS_WITH_NAN = False


def _new_buffer(like: torch.Tensor, *shape, dtype=None) -> torch.Tensor:
    """Uninitialised output buffer (NaN-filled under FILL_FRESH_BUFFERS_WITH_NAN)."""
    if FILL_FRESH_BUFFERS_WITH_NAN:
        return torch.full(shape or like.shape, float("nan"), dtype=dtype or like.dtype, device=like.device)
    return torch.empty(shape or like.shape, dtype=dtype or like.dtype, device=like.device)


def _grid(meta, batch, width):
    return (triton.cdiv(width, meta["BLOCK_D"]), batch)


class _LinearRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, g, initial_state, output_final_state: bool, log_values: bool):
        values, g = values.contiguous(), g.contiguous()
        if initial_state is not None:
            initial_state = initial_state.contiguous()
        batch, length, width = values.shape
        h = _new_buffer(values)
        final_state = _new_buffer(values, batch, width, dtype=torch.float32) if output_final_state else None
        _forward_kernel[lambda meta: _grid(meta, batch, width)](
            values, g, initial_state, h, final_state, length, width, _length_bucket(length),
            LOG_VALUES=log_values, HAS_H0=initial_state is not None, STORE_FINAL=output_final_state)
        ctx.save_for_backward(values, g, h, initial_state)
        ctx.log_values = log_values
        return h, final_state

    @staticmethod
    def backward(ctx, grad_h, grad_final):
        values, g, h, initial_state = ctx.saved_tensors
        batch, length, width = values.shape
        grad_h = grad_h.contiguous() if grad_h is not None else torch.zeros_like(h)
        grad_values = _new_buffer(values)
        grad_g = _new_buffer(g)
        grad_initial = _new_buffer(initial_state) if initial_state is not None else None
        _backward_kernel[lambda meta: _grid(meta, batch, width)](
            values, g, h, initial_state, grad_h,
            grad_final.contiguous() if grad_final is not None else None,
            grad_values, grad_g, grad_initial, length, width, _length_bucket(length),
            LOG_VALUES=ctx.log_values, HAS_H0=initial_state is not None, HAS_DHT=grad_final is not None)
        return grad_values, grad_g, grad_initial, None, None


def linear_recurrence_triton(x, g, initial_state=None, output_final_state=False):
    """Fused h_t = exp(g_t) * h_{t-1} + x_t; (batch, T, D) inputs; returns (h, final_state float32 or None)."""
    return _LinearRecurrence.apply(x, g, initial_state, output_final_state, False)


def log_linear_recurrence_triton(log_coeffs, log_values, initial_state=None, output_final_state=False):
    """Fused h_t = exp(log_coeffs_t) * h_{t-1} + exp(log_values_t); returns (h, final_state float32 or None)."""
    return _LinearRecurrence.apply(log_values, log_coeffs, initial_state, output_final_state, True)

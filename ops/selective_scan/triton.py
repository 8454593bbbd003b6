"""Fused Triton selective scan: forward and backward, for variable B/C ((batch, N, L) or (batch, G, N, L)).

The structure is the one that makes mamba-ssm's CUDA kernel fast. One program owns one batch row, BLOCK_D
channels and the whole sequence, which it walks in chunks of BLOCK_L = 512 steps; inside a chunk each thread
holds consecutive time steps of one channel, and one warp spans the chunk, so no scan crosses warps. The
per-(d, l) work (u and delta loads, softplus, the D skip, the z gate) is done once per chunk; a loop over the N
states then runs, for state n, h_t = exp(dt_t A_n) h_{t-1} + dt_t u_t B_t[n] as a forward associative scan over
the chunk's (BLOCK_D, BLOCK_L) tile (the state entering the chunk joins the first step's input, so the scan
yields the states themselves) and adds h_t C_t[n] into y, which stays in registers (no cross-lane sum over N).

The state carried from chunk to chunk lives in ``ckpt`` (batch, dim, chunks + 1, N) float32: chunk c reads
state n from slot c and writes slot c + 1 (the chunk's last state, picked out within the warp); a barrier per
chunk makes it visible to the rest of the program. These are also the backward's checkpoints, one every
BLOCK_L steps; slot ``chunks`` is the last state.

The backward walks the chunks from the last to the first; one program owns one batch row and one channel (one
warp), like the forward. Per chunk, the per-(d, l) work (loads, softplus, the gate's dL/dy and dL/dz) is done once
in time order; delta and dL/dy reach the time-reversed order through a small per-program scratch (stored in time
order, read reversed). Per state, two forward-direction scans run: the adjoint
lambda_t = a_{t+1} lambda_{t+1} + g_y_t C_t over the chunk read time-reversed (C from a time-reversed copy, a small
(batch, G, N, L) tensor, so its loads stay contiguous), then the states h (recomputed from the chunk's checkpoint) in
time order. No reverse associative scan is compiled: Triton's reverse lowering with a non-commutative combine has
had correctness bugs (Triton issue 4362) that the interpreter cannot show. lambda is handed to the time-order pass
through the scratch (two slots, alternating between states, one barrier per state), so every gradient is formed
in time order: dB and dC go straight to relaxed float32 atomics (into buffers padded to whole chunks, so no mask;
with several channels per program, as in the interpreter's test tiles, they are summed over the channels first),
dA accumulates per (channel, state) in a float32 buffer, and sum_n lambda B and sum_n A lambda a h_prev stay in
registers for du and ddelta; the pre-gate output y is kept by the forward (only when a backward can follow).

Static costs at the anchor shapes: python -m ops.compile_check selective_scan --report; results/kernels-sm90.md.
Not yet timed on a GPU.

Scope: real A only; time-invariant B/C ((dim, N)) are left to the reference by ``ops.selective_scan``.
"""
import torch
import triton
import triton.language as tl

from ops.selective_scan.reference import _check_real

@triton.jit
def _combine(a_left, x_left, a_right, x_right):
    # composition of h -> a_left h + x_left followed by h -> a_right h + x_right
    return a_left * a_right, a_right * x_left + x_right


@triton.jit
def _softplus_dt(delta_ptr, bias, offs, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Discretised delta (float32) and its pre-softplus value; 0 where masked (decay 1, no input)."""
    raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:  # log(1 + e^raw) with the fast base-2 units
        dt = tl.where(raw <= 20.0, tl.log2(1.0 + tl.exp2(raw * 1.4426950408889634)) * 0.6931471805599453, raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _bc_offsets(batch_id, group, n, t, N, L, G, GROUPED: tl.constexpr):
    """Offsets of B[., n, t] or C[., n, t] for each (channel, step) of the tile: from the channel's group, or one
    row for all channels (then spelt out per channel, so that the load gets the tile's layout, not a broadcast
    that would pass through shared memory)."""
    if GROUPED:
        return ((batch_id * G + group[:, None]) * N + n) * L + t[None, :]
    return (batch_id * N + n) * L + t[None, :] + 0 * group[:, None]


@triton.jit
def _sigmoid(x):
    # 1 / (1 + e^-x) with the fast exponential and an approximate division (2 ulp): the hardware units, no slow path
    return tl.fdiv(1.0, 1.0 + tl.exp2(x * -1.4426950408889634), approx=True)


@triton.jit
def _gate(g_out, zz, y, HAS_Z: tl.constexpr):
    """dL/dy and dL/dz for out = y * silu(z) (or out = y without z)."""
    if HAS_Z:
        sig = _sigmoid(zz)
        return g_out * zz * sig, g_out * y * sig * (1.0 + zz * (1.0 - sig))
    return g_out, g_out


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, y_ptr, ckpt_ptr,
    DIM, L, N, G, CH_PER_GROUP, N_CHUNKS,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    SAVE_Y: tl.constexpr, GROUPED: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_d, batch_id = tl.program_id(0), tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < DIM
    d_safe = tl.where(d_mask, d, 0)  # masked channels read channel 0's parameters and store nothing
    group = d_safe // CH_PER_GROUP
    t_local = tl.arange(0, BLOCK_L)
    is_first = (t_local == 0)[None, :]
    is_last = (t_local == BLOCK_L - 1)[None, :]
    row = (batch_id * DIM + d) * L
    ckpt_row = (batch_id * DIM + d_safe) * (N_CHUNKS + 1) * N
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_safe).to(tl.float32)

    for c in range(0, N_CHUNKS):
        t = c * BLOCK_L + t_local
        mask = d_mask[:, None] & (t < L)[None, :]
        offs = row[:, None] + t[None, :]
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _softplus_dt(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        for n in range(0, N):
            A2 = tl.load(A_ptr + d_safe * N + n).to(tl.float32) * 1.4426950408889634
            bc = _bc_offsets(batch_id, group, n, t, N, L, G, GROUPED)
            Bn = tl.load(B_ptr + bc, mask=mask, other=0.0).to(tl.float32)
            Cn = tl.load(C_ptr + bc, mask=mask, other=0.0).to(tl.float32)
            h_in = tl.load(ckpt_ptr + ckpt_row + c * N + n)
            decay = tl.exp2(dt * A2[:, None])
            # the state entering the chunk joins the first step's input, so the scan yields the states themselves
            x = tl.where(is_first, decay * h_in[:, None], 0.0) + dtu * Bn
            _, h = tl.associative_scan((decay, x), 1, _combine)
            y += h * Cn
            # padded steps pass the state through, so the last step holds the state after step L - 1
            tl.store(ckpt_ptr + ckpt_row + (c + 1) * N + n, tl.sum(tl.where(is_last, h, 0.0), axis=1), mask=d_mask)
        if HAS_D:
            y += tl.load(D_ptr + d_safe).to(tl.float32)[:, None] * u
        if SAVE_Y:  # y before the gate, for dL/dz
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        if HAS_Z:
            zz = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
        tl.debug_barrier()  # the next chunk reads the states this one stored, from other threads


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, Cf_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, ckpt_ptr, g_out_ptr,
    g_u_ptr, g_delta_ptr, g_z_ptr, g_A_ptr, g_B_ptr, g_C_ptr, g_D_ptr, g_bias_ptr, lam_ptr, scratch_ptr,
    DIM, L, L_PAD, N, G, CH_PER_GROUP, N_CHUNKS,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    GROUPED: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_d, batch_id = tl.program_id(0), tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < DIM
    d_safe = tl.where(d_mask, d, 0)
    group = d_safe // CH_PER_GROUP
    i = tl.max_contiguous(tl.arange(0, BLOCK_L), 4)  # runs of 4: the layout of the float32 atomics and stores
    rev = BLOCK_L - 1 - i
    is_start = (i == 0)[None, :]  # the first element of a tile, in either order
    is_end = (i == BLOCK_L - 1)[None, :]  # reversed order: the chunk's first step comes last
    row = (batch_id * DIM + d) * L
    state_row = (batch_id * DIM + d_safe) * N
    ckpt_row = (batch_id * DIM + d_safe) * (N_CHUNKS + 1) * N
    # two slots of (BLOCK_D, BLOCK_L) float32 per program, alternating between states; the adjoint is written
    # time reversed (descending addresses), so that the forward-order pass reads it in time order
    scratch = (scratch_ptr + (batch_id * tl.num_programs(0) + pid_d) * 4 * BLOCK_D * BLOCK_L
               + tl.arange(0, BLOCK_D)[:, None] * BLOCK_L)
    dt_slot = scratch + 2 * BLOCK_D * BLOCK_L
    gy_slot = scratch + 3 * BLOCK_D * BLOCK_L
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_safe).to(tl.float32)
    skip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + d_safe).to(tl.float32)
    g_D_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    g_bias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    for cc in range(0, N_CHUNKS):
        c = N_CHUNKS - 1 - cc
        # forward order (f): everything but the adjoint's scan; reversed order (r): the adjoint's scan only
        t_f = c * BLOCK_L + i
        t_r = c * BLOCK_L + rev
        mask_f = d_mask[:, None] & (t_f < L)[None, :]
        offs_f = row[:, None] + t_f[None, :]
        u_f = tl.load(u_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
        dt_f, raw_f = _softplus_dt(delta_ptr, bias, offs_f, mask_f, HAS_BIAS, SOFTPLUS)
        g_out_f = tl.load(g_out_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
        z_f = g_out_f
        y_f = g_out_f
        if HAS_Z:
            z_f = tl.load(z_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
            y_f = tl.load(y_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
        g_y_f, g_z = _gate(g_out_f, z_f, y_f, HAS_Z)
        if HAS_Z:
            tl.store(g_z_ptr + offs_f, g_z.to(g_z_ptr.dtype.element_ty), mask=mask_f)
        dtu_f = dt_f * u_f

        # the reversed pass needs dL/dy_t and delta_{t+1} (the decay that carries lambda_{t+1} back to t): computed
        # once here, in time order, they reach it through the scratch, read time reversed
        tl.store(dt_slot + i[None, :], dt_f)
        tl.store(gy_slot + i[None, :], g_y_f)
        end = (c + 1) * BLOCK_L  # the next chunk's first step
        dt_end, raw_end = _softplus_dt(delta_ptr, bias, row[:, None] + end,
                                 d_mask[:, None] & (end + 0 * row[:, None] < L), HAS_BIAS, SOFTPLUS)
        tl.debug_barrier()
        dt_next_r = tl.load(dt_slot + rev[None, :] + 1, mask=(i > 0)[None, :], other=0.0)
        dt_next_r = tl.where(is_start, dt_end, dt_next_r)
        g_y_r = tl.load(gy_slot + rev[None, :])
        t_flip = L - (c + 1) * BLOCK_L + i  # = L - 1 - t_r: C also comes time-reversed in memory (Cf), so that its
        #                                   reversed tile loads as contiguous vectors
        mask_flip = d_mask[:, None] & (t_flip >= 0)[None, :]  # t_r < L
        g_u_acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)   # sum_n lambda B
        g_dt_acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)  # sum_n A lambda a h_prev

        for n in range(0, N):
            A_n = tl.load(A_ptr + d_safe * N + n).to(tl.float32)
            A2 = A_n * 1.4426950408889634
            slot = scratch + (n % 2) * BLOCK_D * BLOCK_L
            # adjoint, time reversed: lambda_t = a_{t+1} lambda_{t+1} + g_y_t C_t, carried in from the later chunk
            C_r = tl.load(Cf_ptr + _bc_offsets(batch_id, group, n, t_flip, N, L, G, GROUPED), mask=mask_flip,
                          other=0.0).to(tl.float32)
            lam_in = tl.load(lam_ptr + state_row + n)
            decay_r = tl.exp2(dt_next_r * A2[:, None])
            _, lam = tl.associative_scan((decay_r, tl.where(is_start, decay_r * lam_in[:, None], 0.0) + g_y_r * C_r),
                                         1, _combine)
            tl.store(slot + i[None, :], lam)
            # lambda at the chunk's first step, for the chunk before
            tl.store(lam_ptr + state_row + n, tl.sum(tl.where(is_end, lam, 0.0), axis=1), mask=d_mask)
            tl.debug_barrier()  # the forward-order pass reads the slot from other threads

            # states of this chunk in time order, from its checkpoint
            bc_f = _bc_offsets(batch_id, group, n, t_f, N, L, G, GROUPED)
            B_f = tl.load(B_ptr + bc_f, mask=mask_f, other=0.0).to(tl.float32)
            C_f = tl.load(C_ptr + bc_f, mask=mask_f, other=0.0).to(tl.float32)
            h_in = tl.load(ckpt_ptr + ckpt_row + c * N + n)
            x_f = dtu_f * B_f
            decay_f = tl.exp2(dt_f * A2[:, None])
            # the state entering the chunk joins the first step's input (as in the forward kernel)
            _, h = tl.associative_scan((decay_f, tl.where(is_start, decay_f * h_in[:, None], 0.0) + x_f), 1,
                                       _combine)
            lam_f = tl.load(slot + rev[None, :])
            q = lam_f * (h - x_f)  # lambda_t a_t h_{t-1}
            g_u_acc += lam_f * B_f
            g_dt_acc += A_n[:, None] * q
            g_A_old = tl.load(g_A_ptr + state_row + n)
            tl.store(g_A_ptr + state_row + n, g_A_old + tl.sum(q * dt_f, axis=1), mask=d_mask)
            g_inp = lam_f * dtu_f  # d/dB
            g_hC = h * g_y_f  # d/dC
            # dB and dC are float32 buffers padded to whole chunks (L_PAD steps)
            g_bc = _bc_offsets(batch_id, group, n, t_f, N, L_PAD, G, GROUPED)
            if BLOCK_D == 1:  # one channel: no sum over channels, the atomics keep the tile's layout, and no mask
                #               (the padded steps add zeros: dt u and dL/dy are 0 there)
                tl.atomic_add(g_B_ptr + g_bc, g_inp, sem="relaxed")
                tl.atomic_add(g_C_ptr + g_bc, g_hC, sem="relaxed")
            elif GROUPED:
                tl.atomic_add(g_B_ptr + g_bc, g_inp, mask=mask_f, sem="relaxed")
                tl.atomic_add(g_C_ptr + g_bc, g_hC, mask=mask_f, sem="relaxed")
            else:  # summed over the program's channels first
                g_row = (batch_id * N + n) * L_PAD + t_f
                tl.atomic_add(g_B_ptr + g_row, tl.sum(g_inp, axis=0), mask=t_f < L, sem="relaxed")
                tl.atomic_add(g_C_ptr + g_row, tl.sum(g_hC, axis=0), mask=t_f < L, sem="relaxed")

        # sum_n lambda (u B + A a h_prev) = u sum_n lambda B + sum_n A lambda a h_prev
        g_u = g_u_acc * dt_f + g_y_f * skip[:, None]
        g_dt = g_dt_acc + g_u_acc * u_f
        if SOFTPLUS:
            g_dt = tl.where(raw_f <= 20.0, g_dt * _sigmoid(raw_f), g_dt)
        g_dt = tl.where(mask_f, g_dt, 0.0)
        tl.store(g_u_ptr + offs_f, g_u.to(g_u_ptr.dtype.element_ty), mask=mask_f)
        tl.store(g_delta_ptr + offs_f, g_dt.to(g_delta_ptr.dtype.element_ty), mask=mask_f)
        g_D_acc += tl.sum(g_y_f * u_f, axis=1)
        g_bias_acc += tl.sum(g_dt, axis=1)
        tl.debug_barrier()  # the chunk before reads lambda from other threads

    tl.store(g_D_ptr + batch_id * DIM + d, g_D_acc, mask=d_mask)
    tl.store(g_bias_ptr + batch_id * DIM + d, g_bias_acc, mask=d_mask)


# Launch shapes. A program owns BLOCK_D channels and walks time in chunks of BLOCK_L steps (the checkpoint stride,
# shared by both kernels). Each kernel's (BLOCK_D, warps) keeps one warp along time, so that its scans never cross
# warps. Chosen from the static report (python -m ops.compile_check selective_scan --report), not from timings:
# none were taken yet.
BLOCK_L = 512
FWD_BLOCK_D, FWD_WARPS = 1, 1
BWD_BLOCK_D, BWD_WARPS = 1, 1
# Kept so that older tests that vary it still run: the states are checkpointed at every chunk boundary (every
# BLOCK_L >= 512 steps in launches), and this no longer changes the kernel.
CKPT_EVERY = 1

# Test hooks. _TEST_TILES forces (BLOCK_D, BLOCK_L): tiny tiles keep interpreter tests fast and make small inputs
# span several ragged chunks and channel blocks. _NAN_FILL fills fresh output buffers with NaN, so an unwritten
# entry fails the comparison.
_TEST_TILES = None
_NAN_FILL = False


def _fresh(shape, like, dtype=None):
    dtype = dtype or like.dtype
    if _NAN_FILL:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _tiles(backward=False):
    """(BLOCK_D, BLOCK_L, warps) of the forward or backward kernel."""
    block_d, warps = (BWD_BLOCK_D, BWD_WARPS) if backward else (FWD_BLOCK_D, FWD_WARPS)
    if _TEST_TILES is not None:
        return (*_TEST_TILES, warps)
    return block_d, BLOCK_L, warps


def _as_grouped(X):
    return X[:, None] if X.dim() == 3 else X  # (batch, N, L) -> (batch, 1, N, L)


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save):
        batch, dim, length = u.shape
        n_state = A.shape[1]
        b_shape, c_shape = B.shape, C.shape
        u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
        D = D.contiguous() if D is not None else None
        delta_bias = delta_bias.contiguous() if delta_bias is not None else None
        B, C = _as_grouped(B).contiguous(), _as_grouped(C).contiguous()
        groups = B.shape[1]
        if dim % groups:
            raise ValueError(f"selective_scan: dim {dim} is not divisible by the number of B/C groups {groups}")
        z = z.contiguous() if z is not None else None
        block_d, block_l, warps = _tiles()
        n_chunks = triton.cdiv(length, block_l)
        out = _fresh(u.shape, u)
        save_y = save and z is not None
        y = _fresh(u.shape, u) if save_y else None
        ckpt = _fresh((batch, dim, n_chunks + 1, n_state), u, torch.float32)
        if initial_state is not None:
            ckpt[:, :, 0] = initial_state.float()
        else:
            ckpt[:, :, 0] = 0.0
        grid = (triton.cdiv(dim, block_d), batch)
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, D, z, delta_bias, out, y, ckpt,
            dim, length, n_state, groups, dim // groups, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), SAVE_Y=save_y, GROUPED=groups > 1,
            BLOCK_D=block_d, BLOCK_L=block_l, num_warps=warps,
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, y, ckpt)
            ctx.delta_softplus = bool(delta_softplus)
            ctx.b_shape, ctx.c_shape = b_shape, c_shape
            ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        return out, ckpt[:, :, n_chunks].clone()

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, y, ckpt = ctx.saved_tensors
        batch, dim, length = u.shape
        n_state, groups = A.shape[1], B.shape[1]
        block_d, block_l, warps = _tiles(backward=True)
        n_chunks = ckpt.shape[2] - 1
        assert n_chunks == triton.cdiv(length, block_l), "the forward's checkpoints fix the chunk length"
        g_u, g_delta = _fresh(u.shape, u), _fresh(delta.shape, delta)
        g_z = _fresh(z.shape, z) if z is not None else None
        g_A = torch.zeros((batch, dim, n_state), device=u.device, dtype=torch.float32)
        # dB and dC padded to whole chunks, so that the kernel's atomics need no mask
        g_B = torch.zeros((*B.shape[:-1], n_chunks * block_l), device=u.device, dtype=torch.float32)
        g_C = torch.zeros((*C.shape[:-1], n_chunks * block_l), device=u.device, dtype=torch.float32)
        g_D = _fresh((batch, dim), u, torch.float32)
        g_bias = _fresh((batch, dim), u, torch.float32)
        # lambda carried between chunks, starting from dL/d(last state)
        lam = (g_last.float().contiguous().clone() if g_last is not None
               else torch.zeros((batch, dim, n_state), device=u.device, dtype=torch.float32))
        grid = (triton.cdiv(dim, block_d), batch)
        scratch = torch.empty(batch * grid[0] * 4 * block_d * block_l, device=u.device, dtype=torch.float32)
        C_flip = C.flip(-1)  # small: (batch, G, N, L)
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, C_flip, D, z, delta_bias, y, ckpt, g_out.contiguous(),
            g_u, g_delta, g_z, g_A, g_B, g_C, g_D, g_bias, lam, scratch,
            dim, length, n_chunks * block_l, n_state, groups, dim // groups, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, GROUPED=groups > 1,
            BLOCK_D=block_d, BLOCK_L=block_l, num_warps=warps,
        )
        g_h0 = None
        if ctx.h0_dtype is not None:  # dL/dh_{-1} = a_0 lambda_0
            dt0 = delta[:, :, 0].float()
            if delta_bias is not None:
                dt0 = dt0 + delta_bias.float()
            if ctx.delta_softplus:
                dt0 = torch.nn.functional.softplus(dt0)
            g_h0 = (torch.exp(dt0[:, :, None] * A.float()) * lam).to(ctx.h0_dtype)
        return (g_u, g_delta, g_A.sum(0).to(A.dtype),
                g_B[..., :length].to(B.dtype).reshape(ctx.b_shape), g_C[..., :length].to(C.dtype).reshape(ctx.c_shape),
                g_D.sum(0).to(D.dtype) if D is not None else None, g_z,
                g_bias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None, None,
                g_h0, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None):
    """Triton selective scan for variable B/C; same arguments and results as the reference."""
    _check_real(A)
    if B.dim() < 3 or C.dim() < 3:
        raise ValueError("selective_scan (triton): B and C must vary with time, (batch, N, L) or (batch, G, N, L)")
    block_l = _tiles()[1]
    if max(u.numel(), u.shape[0] * u.shape[1] * A.shape[1] * (triton.cdiv(u.shape[2], block_l) + 1),
           B.numel(), C.numel()) >= 2 ** 31:
        # offsets are 32-bit to spare registers; beyond this, split the batch
        raise ValueError(f"selective_scan (triton): u of shape {tuple(u.shape)} is too large for 32-bit offsets; "
                         "split the batch")
    # the pre-gate output is kept only when a backward can follow (not in inference)
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    out, last = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save)
    return (out, last) if return_last_state else out

"""Fused Triton selective scan: forward and backward, for variable B/C ((batch, N, L) or (batch, G, N, L)).

One program owns (one batch row, BLOCK_D channels) and walks the sequence in chunks of BLOCK_L steps. Inside
a chunk the recurrence h_t = a_t h_{t-1} + x_t runs as a parallel associative scan over a
(BLOCK_D, BLOCK_L, N) register tile in float32; the state is carried between chunks in registers, so u,
delta, z, B, C are read once and the output written once. The forward also stores the state entering every
CKPT_EVERY-th chunk (float32) so that the backward can recompute each chunk's states locally.

The backward walks the chunks in reverse (with CKPT_EVERY > 1, segment by segment: it first replays the
segment forward from its checkpoint into a small scratch, then walks the segment's chunks in reverse). With lambda_t = dL/dh_t it runs the reverse scan
lambda_t = a_{t+1} lambda_{t+1} + g_y_t C_t (a_{t+1} read directly from delta at t+1, so no register shift),
and uses a_t h_{t-1} = h_t - x_t to get the decay gradient without keeping h_{t-1}. dB and dC are summed over
channels in registers and added into float32 buffers with atomics (several channel blocks share them).

Scope: real A only; time-invariant B/C ((dim, N)) are left to the reference by ``ops.selective_scan``.
Not yet timed on a GPU. The per-chunk checkpoints cost batch*dim*(L/BLOCK_L)*N*4 bytes written and read again
(~50 MB at B8 D1536 L2048 N16, ~400 MB at N64): checkpointing every few chunks and recomputing inside the
backward is the first thing to try if fwd+bwd is memory-bound there.
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
def _delta_at(delta_ptr, bias, offsets, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Discretised delta (float32) and the pre-softplus value; 0 where masked (decay 1, no input)."""
    raw = tl.load(delta_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _load_bc(ptr, batch_id, group, n, t, n_mask, t_mask, DIM_N, L, G, GROUPED: tl.constexpr):
    """B or C for this chunk as float32, shaped to broadcast against (BLOCK_D, BLOCK_L, BLOCK_N)."""
    if GROUPED:  # one row of B per channel, read from its group
        base = (batch_id * G + group) * DIM_N * L
        offs = base[:, None, None] + n[None, None, :] * L + t[None, :, None]
        mask = (group[:, None, None] >= 0) & t_mask[None, :, None] & n_mask[None, None, :]
        values = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:  # one B shared by all channels
        offs = batch_id * DIM_N * L + n[None, :] * L + t[:, None]
        mask = t_mask[:, None] & n_mask[None, :]
        values = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)[None, :, :]
    return values


@triton.jit
def _chunk_states(dt, u, A, Bt, h_in):
    """States h_t of one chunk (BLOCK_D, BLOCK_L, BLOCK_N) from the state entering it, and the inputs x_t."""
    decay = tl.exp(dt[:, :, None] * A[:, None, :])
    inp = (dt * u)[:, :, None] * Bt
    decay_cum, inp_cum = tl.associative_scan((decay, inp), 1, _combine)
    return inp_cum + decay_cum * h_in[:, None, :], inp


@triton.jit
def _scan_chunk(u_ptr, delta_ptr, B_ptr, A, bias, h_in, k, batch_id, group, row, d_mask, n, n_mask, t_local, L, N, G,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GROUPED: tl.constexpr, BLOCK_L: tl.constexpr):
    """Load chunk k's u, delta and B and return its states with what the caller needs to read and write it."""
    t = k * BLOCK_L + t_local
    t_mask = t < L
    offs = row[:, None] + t[None, :]
    mask = d_mask[:, None] & t_mask[None, :]
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dt, _ = _delta_at(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
    Bt = _load_bc(B_ptr, batch_id, group, n, t, n_mask, t_mask, N, L, G, GROUPED)
    hs, _ = _chunk_states(dt, u, A, Bt, h_in)
    return hs, u, t, t_mask, offs, mask


@triton.jit
def _program_setup(pid_d, batch_id, A_ptr, D_ptr, bias_ptr, DIM, L, N, CH_PER_GROUP,
                   HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr):
    """Indices, masks and per-channel parameters of one (channel block, batch row) program, shared by both kernels."""
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    t_local = tl.arange(0, BLOCK_L)
    d_mask, n_mask = d < DIM, n < N
    dn_mask = d_mask[:, None] & n_mask[None, :]
    group = tl.where(d_mask, d // CH_PER_GROUP, -1)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(tl.float32)
    state_offs = (batch_id * DIM + d[:, None]) * N + n[None, :]
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    skip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    row = (batch_id * DIM + d) * L
    is_last = (t_local == BLOCK_L - 1)[None, :, None]
    return d, n, t_local, d_mask, n_mask, dn_mask, group, A, state_offs, bias, skip, row, is_last


@triton.jit
def _state_or_zeros(ptr, state_offs, dn_mask, PRESENT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """An optional (batch, dim, N) state's tile for this program, in float32; zeros when it is absent."""
    if PRESENT:
        return tl.load(ptr + state_offs, mask=dn_mask, other=0.0).to(tl.float32)
    return tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, last_ptr, ckpt_ptr,
    DIM, L, N, G, CH_PER_GROUP, N_CHUNKS, N_CKPT,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE_CKPT: tl.constexpr, CKPT_EVERY: tl.constexpr, GROUPED: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d, batch_id = tl.program_id(0), tl.program_id(1)
    d, n, t_local, d_mask, n_mask, dn_mask, group, A, state_offs, bias, skip, row, is_last = _program_setup(
        pid_d, batch_id, A_ptr, D_ptr, bias_ptr, DIM, L, N, CH_PER_GROUP, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_L, BLOCK_N)
    h = _state_or_zeros(h0_ptr, state_offs, dn_mask, HAS_H0, BLOCK_D, BLOCK_N)

    for k in range(0, N_CHUNKS):
        if SAVE_CKPT:  # the state entering every CKPT_EVERY-th chunk
            ckpt_offs = ((batch_id * DIM + d[:, None]) * N_CKPT + k // CKPT_EVERY) * N + n[None, :]
            tl.store(ckpt_ptr + ckpt_offs, h, mask=dn_mask & (k % CKPT_EVERY == 0))
        hs, u, t, t_mask, offs, mask = _scan_chunk(
            u_ptr, delta_ptr, B_ptr, A, bias, h, k, batch_id, group, row, d_mask, n, n_mask, t_local, L, N, G,
            HAS_BIAS, SOFTPLUS, GROUPED, BLOCK_L)
        Ct = _load_bc(C_ptr, batch_id, group, n, t, n_mask, t_mask, N, L, G, GROUPED)
        y = tl.sum(hs * Ct, axis=2)
        if HAS_D:
            y += skip[:, None] * u
        if HAS_Z:
            zz = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=1)  # padded steps pass the state through unchanged

    tl.store(last_ptr + state_offs, h, mask=dn_mask)


@triton.jit
def _chunk_backward(
    u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, g_out_ptr, g_u_ptr, g_delta_ptr, g_z_ptr, g_B_ptr, g_C_ptr,
    A, bias, skip, h_in, lam, g_A_acc, g_D_acc, g_bias_acc,
    k, batch_id, group, row, d_mask, n, n_mask, t_local, L, N, G,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GROUPED: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """Gradients of chunk k given the state entering it and lambda (dL/dh) at the next chunk's first step.
    Stores dL/du, dL/ddelta, dL/dz; adds dB, dC; returns lambda at this chunk's first step and the sums."""
    t = k * BLOCK_L + t_local
    t_mask = t < L
    offs = row[:, None] + t[None, :]
    mask = d_mask[:, None] & t_mask[None, :]
    next_mask = d_mask[:, None] & (t + 1 < L)[None, :]
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dt, raw = _delta_at(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
    dt_next, _ = _delta_at(delta_ptr, bias, offs + 1, next_mask, HAS_BIAS, SOFTPLUS)
    g_out = tl.load(g_out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    Bt = _load_bc(B_ptr, batch_id, group, n, t, n_mask, t_mask, N, L, G, GROUPED)
    Ct = _load_bc(C_ptr, batch_id, group, n, t, n_mask, t_mask, N, L, G, GROUPED)

    # recompute this chunk's states from the state entering it
    hs, inp = _chunk_states(dt, u, A, Bt, h_in)
    A3 = A[:, None, :]

    g_y = g_out
    if HAS_Z:
        zz = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = tl.sum(hs * Ct, axis=2) + skip[:, None] * u
        sig = tl.sigmoid(zz)
        g_z = g_out * y * sig * (1.0 + zz * (1.0 - sig))
        tl.store(g_z_ptr + offs, g_z.to(g_z_ptr.dtype.element_ty), mask=mask)
        g_y = g_out * zz * sig

    # lambda_t = a_{t+1} lambda_{t+1} + g_y_t C_t, from the end of the chunk with the later chunks' carry
    decay_next = tl.exp(dt_next[:, :, None] * A3)
    decay_rev, lam_local = tl.associative_scan((decay_next, g_y[:, :, None] * Ct), 1, _combine, reverse=True)
    lam_t = lam_local + decay_rev * lam[:, None, :]

    decayed_prev = hs - inp  # a_t h_{t-1}
    g_dt = tl.sum(lam_t * (decayed_prev * A3 + u[:, :, None] * Bt), axis=2)
    g_u = tl.sum(lam_t * Bt, axis=2) * dt + g_y * skip[:, None]
    g_A_acc += tl.sum(lam_t * decayed_prev * dt[:, :, None], axis=1)
    g_D_acc += tl.sum(g_y * u, axis=1)
    if SOFTPLUS:
        g_dt = tl.where(raw <= 20.0, g_dt * tl.sigmoid(raw), g_dt)
    g_dt = tl.where(mask, g_dt, 0.0)
    g_bias_acc += tl.sum(g_dt, axis=1)
    tl.store(g_u_ptr + offs, g_u.to(g_u_ptr.dtype.element_ty), mask=mask)
    tl.store(g_delta_ptr + offs, g_dt.to(g_delta_ptr.dtype.element_ty), mask=mask)

    g_inp = lam_t * (dt * u)[:, :, None]   # d/dB
    g_hC = hs * g_y[:, :, None]            # d/dC
    if GROUPED:
        base = (batch_id * G + group) * N * L
        bc_offs = base[:, None, None] + n[None, None, :] * L + t[None, :, None]
        bc_mask = mask[:, :, None] & n_mask[None, None, :]
        tl.atomic_add(g_B_ptr + bc_offs, g_inp, mask=bc_mask)
        tl.atomic_add(g_C_ptr + bc_offs, g_hC, mask=bc_mask)
    else:
        bc_offs = batch_id * N * L + n[None, :] * L + t[:, None]
        bc_mask = t_mask[:, None] & n_mask[None, :]
        tl.atomic_add(g_B_ptr + bc_offs, tl.sum(g_inp, axis=0), mask=bc_mask)
        tl.atomic_add(g_C_ptr + bc_offs, tl.sum(g_hC, axis=0), mask=bc_mask)
    lam = tl.sum(tl.where((t_local == 0)[None, :, None], lam_t, 0.0), axis=1)  # lambda at this chunk's first step
    return lam, g_A_acc, g_D_acc, g_bias_acc



@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, g_out_ptr, g_last_ptr,
    g_u_ptr, g_delta_ptr, g_z_ptr, g_A_ptr, g_B_ptr, g_C_ptr, g_D_ptr, g_bias_ptr, g_h0_ptr, scratch_ptr,
    DIM, L, N, G, CH_PER_GROUP, N_CKPT,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_G_LAST: tl.constexpr, HAS_H0: tl.constexpr, CKPT_EVERY: tl.constexpr, GROUPED: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d, batch_id = tl.program_id(0), tl.program_id(1)
    d, n, t_local, d_mask, n_mask, dn_mask, group, A, state_offs, bias, skip, row, is_last = _program_setup(
        pid_d, batch_id, A_ptr, D_ptr, bias_ptr, DIM, L, N, CH_PER_GROUP, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_L, BLOCK_N)
    lam = _state_or_zeros(g_last_ptr, state_offs, dn_mask, HAS_G_LAST, BLOCK_D, BLOCK_N)
    g_A_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    g_D_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    g_bias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    if CKPT_EVERY > 1:  # this program's slots for the states entering each chunk of a segment
        scratch = (scratch_ptr + (batch_id * tl.num_programs(0) + pid_d) * CKPT_EVERY * BLOCK_D * BLOCK_N
                   + tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :])

    for ss in range(0, N_CKPT):
        seg = N_CKPT - 1 - ss
        ckpt_offs = ((batch_id * DIM + d[:, None]) * N_CKPT + seg) * N + n[None, :]
        h_seg = tl.load(ckpt_ptr + ckpt_offs, mask=dn_mask, other=0.0)
        if CKPT_EVERY > 1:
            # replay the segment forward to recover the state entering each of its chunks
            h = h_seg
            tl.store(scratch, h)
            for j in range(0, CKPT_EVERY - 1):
                hs, _, _, _, _, _ = _scan_chunk(
                    u_ptr, delta_ptr, B_ptr, A, bias, h, seg * CKPT_EVERY + j, batch_id, group, row, d_mask, n,
                    n_mask, t_local, L, N, G, HAS_BIAS, SOFTPLUS, GROUPED, BLOCK_L)
                h = tl.sum(tl.where(is_last, hs, 0.0), axis=1)
                tl.store(scratch + (j + 1) * BLOCK_D * BLOCK_N, h)
            tl.debug_barrier()  # the slots are read below by other threads of this program

        for jj in range(0, CKPT_EVERY):
            j = CKPT_EVERY - 1 - jj
            k = seg * CKPT_EVERY + j  # chunks past the end are fully masked and change nothing
            if CKPT_EVERY > 1:
                h_in = tl.load(scratch + j * BLOCK_D * BLOCK_N)
            else:
                h_in = h_seg
            lam, g_A_acc, g_D_acc, g_bias_acc = _chunk_backward(
                u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, g_out_ptr, g_u_ptr, g_delta_ptr, g_z_ptr, g_B_ptr, g_C_ptr,
                A, bias, skip, h_in, lam, g_A_acc, g_D_acc, g_bias_acc,
                k, batch_id, group, row, d_mask, n, n_mask, t_local, L, N, G,
                HAS_Z, HAS_BIAS, SOFTPLUS, GROUPED, BLOCK_L)

    tl.store(g_A_ptr + state_offs, g_A_acc, mask=dn_mask)
    tl.store(g_D_ptr + batch_id * DIM + d, g_D_acc, mask=d_mask)
    tl.store(g_bias_ptr + batch_id * DIM + d, g_bias_acc, mask=d_mask)
    if HAS_H0:
        # dL/dh_{-1} = a_0 lambda_0
        first = (batch_id * DIM + d) * L
        dt0, _ = _delta_at(delta_ptr, bias, first[:, None], d_mask[:, None], HAS_BIAS, SOFTPLUS)
        tl.store(g_h0_ptr + state_offs, tl.exp(dt0 * A) * lam, mask=dn_mask)


# Launch shapes. Chosen offline from ptxas reports for sm_90 (no spills, fewest registers among those tried), not
# from timings: none were taken yet. The forward and the backward must share BLOCK_L (the checkpoint stride).
FWD_TILE_BUDGET, FWD_WARPS = 4096, 8
BWD_TILE_BUDGET, BWD_WARPS = 2048, 8
# The forward keeps the state entering every CKPT_EVERY-th chunk; with CKPT_EVERY > 1 the backward replays each
# segment forward into a small per-program scratch (L2-resident): fewer HBM bytes, one more chunk scan. Untimed.
CKPT_EVERY = 1

# Test hooks. _TEST_TILES forces (BLOCK_D, BLOCK_L): the interpreter's scan costs per tile entry, so tiny tiles
# keep CPU tests fast. _NAN_FILL fills fresh output buffers with NaN, so an unwritten entry fails the comparison.
_TEST_TILES = None
_NAN_FILL = False


def _fresh(shape, like, dtype=None):
    dtype = dtype or like.dtype
    if _NAN_FILL:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _blocks(n_state: int, budget: int):
    """Tile sizes: BLOCK_D * BLOCK_L * BLOCK_N float32 entries per live tile kept near ``budget``."""
    block_n = triton.next_power_of_2(n_state)
    if _TEST_TILES is not None:
        return (*_TEST_TILES, block_n)
    block_l = 32 if block_n <= 16 else 16
    block_d = max(1, min(16, budget // (block_l * block_n)))
    return block_d, block_l, block_n


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
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        block_d, block_l, block_n = _blocks(n_state, FWD_TILE_BUDGET)
        n_chunks = triton.cdiv(length, block_l)
        n_ckpt = triton.cdiv(n_chunks, CKPT_EVERY)
        out = _fresh(u.shape, u)
        last = _fresh((batch, dim, n_state), u, torch.float32)
        ckpt = _fresh((batch, dim, n_ckpt, n_state), u, torch.float32) if save else last
        grid = (triton.cdiv(dim, block_d), batch)
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, D, z, delta_bias, h0, out, last, ckpt,
            dim, length, n_state, groups, dim // groups, n_chunks, n_ckpt,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), HAS_H0=h0 is not None, SAVE_CKPT=save, CKPT_EVERY=CKPT_EVERY,
            GROUPED=groups > 1,
            BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n, num_warps=FWD_WARPS,
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
            ctx.delta_softplus, ctx.block_l, ctx.ckpt_every = bool(delta_softplus), block_l, CKPT_EVERY
            ctx.b_shape, ctx.c_shape = b_shape, c_shape
            ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        return out, last

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        batch, dim, length = u.shape
        n_state, groups = A.shape[1], B.shape[1]
        n_ckpt = ckpt.shape[2]
        block_d, _, block_n = _blocks(n_state, BWD_TILE_BUDGET)
        block_l = ctx.block_l  # the checkpoints fix the chunk length
        g_u, g_delta = _fresh(u.shape, u), _fresh(delta.shape, delta)
        g_z = _fresh(z.shape, z) if z is not None else None
        g_A = _fresh((batch, dim, n_state), u, torch.float32)
        g_B = torch.zeros(B.shape, device=u.device, dtype=torch.float32)
        g_C = torch.zeros(C.shape, device=u.device, dtype=torch.float32)
        g_D = _fresh((batch, dim), u, torch.float32)
        g_bias = _fresh((batch, dim), u, torch.float32)
        g_h0 = _fresh((batch, dim, n_state), u, torch.float32) if ctx.h0_dtype is not None else None
        grid = (triton.cdiv(dim, block_d), batch)
        scratch = (torch.empty(batch * grid[0] * ctx.ckpt_every * block_d * block_n, device=u.device,
                               dtype=torch.float32) if ctx.ckpt_every > 1 else None)
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, D, z, delta_bias, ckpt, g_out.contiguous(),
            g_last.contiguous() if g_last is not None else None,
            g_u, g_delta, g_z, g_A, g_B, g_C, g_D, g_bias, g_h0, scratch,
            dim, length, n_state, groups, dim // groups, n_ckpt,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, HAS_G_LAST=g_last is not None, HAS_H0=ctx.h0_dtype is not None,
            CKPT_EVERY=ctx.ckpt_every, GROUPED=groups > 1,
            BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n, num_warps=BWD_WARPS,
        )
        return (g_u, g_delta, g_A.sum(0).to(A.dtype),
                g_B.to(B.dtype).view(ctx.b_shape), g_C.to(C.dtype).view(ctx.c_shape),
                g_D.sum(0).to(D.dtype) if D is not None else None, g_z,
                g_bias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None, None,
                g_h0.to(ctx.h0_dtype) if g_h0 is not None else None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None):
    """Triton selective scan for variable B/C; same arguments and results as the reference."""
    _check_real(A)
    if B.dim() < 3 or C.dim() < 3:
        raise ValueError("selective_scan (triton): B and C must vary with time, (batch, N, L) or (batch, G, N, L)")
    if max(u.numel(), u.shape[0] * u.shape[1] * A.shape[1] * triton.cdiv(u.shape[2], 16)) >= 2 ** 31:
        # offsets are 32-bit to spare registers; beyond this, split the batch
        raise ValueError(f"selective_scan (triton): u of shape {tuple(u.shape)} is too large for 32-bit offsets; "
                         "split the batch")
    # chunk checkpoints are written only when a backward can follow (not in inference)
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    out, last = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save)
    return (out, last) if return_last_state else out

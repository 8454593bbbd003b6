"""Fused Triton selective scan: forward and backward, for variable B/C ((batch, N, L) or (batch, G, N, L)).

The structure is the one that makes mamba-ssm's CUDA kernel fast. One program owns one batch row, BLOCK_D
channels (one at launch) and the whole sequence, which it walks in chunks of BLOCK_L = 512 steps. A chunk is held
as a (BLOCK_D, ROWS, LANES) tile, step k * ROWS + r in row r of lane k (16 rows x 32 lanes, one warp, at launch),
so each thread holds 16 consecutive steps; a contiguity hint keeps the rows within the thread (the compiler still
merges a thread's 16 loads, or atomics, into vector ones). The per-(d, l) work (u and delta loads, softplus, the D
skip, the z gate) is done once per chunk; a loop over the N states then runs, for state n,
h_t = exp(dt_t A_n) h_{t-1} + dt_t u_t B_t[n] as a scan in two levels, with forward-direction scans only: along
each thread's rows from a zero state, then across the lanes on the lanes' (decay product, end state), with a
combine (``_combine_excl``) that also yields the exclusive prefix, the state entering each lane (the chunk's
entering state joins at lane 0); h = local h + decay product * entering state. h_t C_t[n] adds into y, which
stays in registers (no cross-lane sum over N).

The state carried from chunk to chunk lives in ``ckpt`` (batch, dim, chunks + 1, N) float32: chunk c reads
state n from slot c and writes slot c + 1 (the last lane's end state); a barrier per chunk makes it visible to
the rest of the program. These are also the backward's checkpoints, one every BLOCK_L steps; slot ``chunks`` is
the last state.

The backward walks the chunks from the last to the first, in the forward's tiles and programs. The per-(d, l) work
(loads, softplus, the gate's dL/dy and dL/dz) is done once per chunk, and delta_{t+1} comes through a small
per-program scratch (stored, read back one step later). Per state, both scans run in that one layout, in two
levels, with forward-direction scans only:
- the states h, recomputed from the chunk's checkpoint as in the forward;
- the adjoint lambda_t = a_{t+1} lambda_{t+1} + g_y_t C_t: the same two levels with the rows read reversed (a flip
  within the thread: register renaming) and the lanes' values reversed (a gather within the warp, one shuffle).
No reverse associative scan is compiled: Triton's reverse lowering with a non-commutative combine has had
correctness bugs (Triton issue 4362) that the interpreter cannot show. With h and lambda in the same registers,
every gradient is formed in place: dB and dC go straight to relaxed float32 atomics (into buffers padded to whole
chunks, so no mask; with several channels per program, as in the interpreter's test tiles, they are summed over
the channels first), dA accumulates per (channel, state) in a float32 buffer, and sum_n lambda B and
sum_n A lambda a h_prev stay in registers for du and ddelta; the pre-gate output y is kept by the forward (only
when a backward can follow). No barrier runs in the state loop.

Static costs at the anchor shapes: python -m ops.compile_check selective_scan --report; results/kernels-sm90.md.
Not yet timed on a GPU.

Scope: real A only; time-invariant B/C ((dim, N)) are left to the reference by ``ops.selective_scan``.
"""
import torch
import triton
import triton.language as tl

from ops.selective_scan.reference import _check_real
from ops.selective_scan.restarts import restart_flags

@triton.jit
def _combine(a_left, x_left, a_right, x_right):
    # composition of h -> a_left h + x_left followed by h -> a_right h + x_right
    return a_left * a_right, a_right * x_left + x_right


@triton.jit
def _bc_offsets(batch_id, group, n, t, G, N, length, GROUPED: tl.constexpr):
    """Offsets of state n's B / C values (or their gradients) at the steps t: (batch, G, N, length) when grouped,
    else (batch, N, length); ``0 * group`` gives both the same shape."""
    if GROUPED:
        offsets = ((batch_id * G + group) * N + n) * length + t
    else:
        offsets = (batch_id * N + n) * length + t + 0 * group
    return offsets


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
def _combine_excl(a_left, x_left, ea_left, ex_left, a_right, x_right, ea_right, ex_right):
    # _combine, carrying also the composition of every step but the last one (ea, ex): a scan with it yields the
    # inclusive and the exclusive prefix at once (a single step's exclusive part is the identity: 1, 0)
    return a_left * a_right, a_right * x_left + x_right, a_left * ea_right, ea_right * x_left + ex_right


@triton.jit
def _last_row(x, R: tl.constexpr):
    """x[:, R - 1, :] of a (BLOCK_D, R, K) tile, exactly: a sum of x there and -0.0 elsewhere (x + -0.0 = x for
    every x, signed zeros and NaN included). The rows are held within each thread with constant indices, so the
    compiler folds this into picking a register; Triton's interpreter runs it as one NumPy sum, where a reduction
    with a custom combine would call Python per element (most of the interpreter's time in these kernels)."""
    r = tl.arange(0, R)[None, :, None]
    return tl.sum(tl.where(r == R - 1, x, -0.0), axis=1)


@triton.jit
def _restarts(restart_ptr, batch_id, L, t, HAS_RESTART: tl.constexpr):
    """Whether each step t starts a packed document (its decay is 0): (1, ROWS, LANES), shared by the channels;
    nothing is loaded without packing."""
    if HAS_RESTART:
        return tl.load(restart_ptr + batch_id * L + t, mask=t < L, other=0) != 0
    return t < 0


@triton.jit
def _decay(dt, A2, restart, HAS_RESTART: tl.constexpr):
    """exp(dt A) (A2 = A / ln 2), and 0 where a packed document starts: nothing of the previous one enters."""
    decay = tl.exp2(dt * A2)
    if HAS_RESTART:
        decay = tl.where(restart, 0.0, decay)
    return decay


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, restart_ptr, out_ptr, y_ptr, ckpt_ptr,
    DIM, L, N, G, CH_PER_GROUP, N_CHUNKS,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    SAVE_Y: tl.constexpr, GROUPED: tl.constexpr, HAS_RESTART: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr, ROWS: tl.constexpr,
):
    # the chunk as a (BLOCK_D, ROWS, LANES) tile, step k * ROWS + r in row r of lane k (as in the backward)
    LANES: tl.constexpr = BLOCK_L // ROWS
    pid_d, batch_id = tl.program_id(0), tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < DIM
    d_safe = tl.where(d_mask, d, 0)  # masked channels read channel 0's parameters and store nothing
    group = (d_safe // CH_PER_GROUP)[:, None, None]
    r = tl.max_contiguous(tl.arange(0, ROWS), 1)[None, :, None]
    k2 = tl.arange(0, LANES)[None, :]
    step = k2[:, None, :] * ROWS + r
    row = ((batch_id * DIM + d) * L)[:, None, None]
    ckpt_row = (batch_id * DIM + d_safe) * (N_CHUNKS + 1) * N
    dmask3 = d_mask[:, None, None]
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_safe).to(tl.float32)
    bias3 = bias[:, None]

    for c in range(0, N_CHUNKS):
        t = c * BLOCK_L + step
        mask = dmask3 & (t < L)
        offs = row + t
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _softplus_dt(delta_ptr, bias3, offs, mask, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        restart = _restarts(restart_ptr, batch_id, L, t, HAS_RESTART)
        y = tl.zeros((BLOCK_D, ROWS, LANES), dtype=tl.float32)
        for n in range(0, N):
            A2 = (tl.load(A_ptr + d_safe * N + n).to(tl.float32) * 1.4426950408889634)[:, None, None]
            bc = _bc_offsets(batch_id, group, n, t, G, N, L, GROUPED)
            Bn = tl.load(B_ptr + bc, mask=mask, other=0.0).to(tl.float32)
            Cn = tl.load(C_ptr + bc, mask=mask, other=0.0).to(tl.float32)
            h_in = tl.load(ckpt_ptr + ckpt_row + c * N + n)[:, None]
            decay = _decay(dt, A2, restart, HAS_RESTART)
            # within each lane's rows from a zero state, then across the lanes (the chunk's state enters at lane 0)
            P, H = tl.associative_scan((decay, dtu * Bn), 1, _combine)
            P_lane, H_lane = _last_row(P, ROWS), _last_row(H, ROWS)
            H_lane = tl.where(k2 == 0, P_lane * h_in + H_lane, H_lane)
            P_end, h_end, P_start, h_start = tl.associative_scan(
                (P_lane, H_lane, tl.full(P_lane.shape, 1.0, tl.float32), tl.zeros_like(H_lane)), 1, _combine_excl)
            h_start = tl.where(k2 == 0, h_in, h_start)
            y += (H + P * h_start[:, None, :]) * Cn
            # padded steps pass the state through, so the last lane's end holds the state after step L - 1
            tl.store(ckpt_ptr + ckpt_row[:, None] + (c + 1) * N + n + 0 * k2, h_end,
                     mask=(k2 == LANES - 1) & d_mask[:, None])
        if HAS_D:
            y += tl.load(D_ptr + d_safe).to(tl.float32)[:, None, None] * u
        if SAVE_Y:  # y before the gate, for dL/dz
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        if HAS_Z:
            zz = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
        tl.debug_barrier()  # the next chunk reads the states this one stored, from another thread


@triton.jit
def _flip_lanes(x, LANES: tl.constexpr):
    """x[:, LANES - 1 - k] of a (BLOCK_D, LANES) row held one value per lane: a gather within the warp."""
    k = tl.arange(0, LANES)[None, :] + 0 * x.to(tl.int32, bitcast=True)
    return tl.gather(x, LANES - 1 - k, 1)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, restart_ptr, y_ptr, ckpt_ptr, g_out_ptr,
    g_u_ptr, g_delta_ptr, g_z_ptr, g_A_ptr, g_B_ptr, g_C_ptr, g_D_ptr, g_bias_ptr, lam_ptr, scratch_ptr,
    DIM, L, L_PAD, N, G, CH_PER_GROUP, N_CHUNKS,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    GROUPED: tl.constexpr, HAS_RESTART: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    ROWS: tl.constexpr,
):
    # A chunk's BLOCK_L steps as a (BLOCK_D, ROWS, LANES) tile: step k * ROWS + r of the chunk is row r of lane k,
    # so each thread holds ROWS consecutive steps (the contiguity hint of 1 keeps the rows within the thread, so no
    # layout splits a lane's steps; the compiler still merges a thread's consecutive loads into vector loads)
    LANES: tl.constexpr = BLOCK_L // ROWS
    pid_d, batch_id = tl.program_id(0), tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < DIM
    d_safe = tl.where(d_mask, d, 0)
    group = (d_safe // CH_PER_GROUP)[:, None, None]
    r = tl.max_contiguous(tl.arange(0, ROWS), 1)[None, :, None]
    k2 = tl.arange(0, LANES)[None, :]  # lanes of a (BLOCK_D, LANES) row
    step = k2[:, None, :] * ROWS + r  # step within the chunk, (1, ROWS, LANES)
    is_chunk_last = step == BLOCK_L - 1
    row = ((batch_id * DIM + d) * L)[:, None, None]
    state_row = (batch_id * DIM + d_safe) * N
    ckpt_row = (batch_id * DIM + d_safe) * (N_CHUNKS + 1) * N
    dmask3 = d_mask[:, None, None]
    # one (BLOCK_D, BLOCK_L) float32 slot per program: delta in time order, read back one step later
    dt_slot = scratch_ptr + (batch_id * tl.num_programs(0) + pid_d) * BLOCK_D * BLOCK_L + \
        tl.arange(0, BLOCK_D)[:, None, None] * BLOCK_L
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_safe).to(tl.float32)
    bias3 = bias[:, None]  # _softplus_dt adds bias[:, None]
    skip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + d_safe).to(tl.float32)
    g_D_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    g_bias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    for cc in range(0, N_CHUNKS):
        c = N_CHUNKS - 1 - cc
        t = c * BLOCK_L + step
        mask = dmask3 & (t < L)
        offs = row + t
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt, raw = _softplus_dt(delta_ptr, bias3, offs, mask, HAS_BIAS, SOFTPLUS)
        g_out = tl.load(g_out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        zz = g_out
        y = g_out
        if HAS_Z:
            zz = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g_y, g_z = _gate(g_out, zz, y, HAS_Z)
        if HAS_Z:
            tl.store(g_z_ptr + offs, g_z.to(g_z_ptr.dtype.element_ty), mask=mask)
        dtu = dt * u
        # delta_{t+1}, whose decay carries lambda_{t+1} back to t: the next step, through the scratch (the step
        # after the chunk, the next chunk's first, is loaded here)
        tl.store(dt_slot + step, dt)
        end = (c + 1) * BLOCK_L
        dt_end, raw_end = _softplus_dt(delta_ptr, bias3, row + end, dmask3 & (end + 0 * row < L), HAS_BIAS,
                                       SOFTPLUS)
        tl.debug_barrier()
        dt_next = tl.load(dt_slot + step + 1, mask=(step + 1 < BLOCK_L) & dmask3, other=0.0)
        dt_next = tl.where(is_chunk_last, dt_end, dt_next)
        tl.debug_barrier()  # the next chunk overwrites the slot
        restart = _restarts(restart_ptr, batch_id, L, t, HAS_RESTART)
        restart_next = _restarts(restart_ptr, batch_id, L, t + 1, HAS_RESTART)  # a_{t+1} = 0 stops lambda there
        g_u_acc = tl.zeros((BLOCK_D, ROWS, LANES), dtype=tl.float32)   # sum_n lambda B
        g_dt_acc = tl.zeros((BLOCK_D, ROWS, LANES), dtype=tl.float32)  # sum_n A lambda a h_prev

        for n in range(0, N):
            A_n = tl.load(A_ptr + d_safe * N + n).to(tl.float32)
            A2 = (A_n * 1.4426950408889634)[:, None, None]
            bc = _bc_offsets(batch_id, group, n, t, G, N, L, GROUPED)
            Bn = tl.load(B_ptr + bc, mask=mask, other=0.0).to(tl.float32)
            Cn = tl.load(C_ptr + bc, mask=mask, other=0.0).to(tl.float32)
            h_in = tl.load(ckpt_ptr + ckpt_row + c * N + n)[:, None]
            lam_in = tl.load(lam_ptr + state_row + n)[:, None]
            decay = _decay(dt, A2, restart, HAS_RESTART)
            x = dtu * Bn

            # states in time order, from the chunk's checkpoint: within each lane's rows, then across the lanes
            P, H = tl.associative_scan((decay, x), 1, _combine)  # from a zero state at the lane's first row
            P_lane, H_lane = _last_row(P, ROWS), _last_row(H, ROWS)
            H_lane = tl.where(k2 == 0, P_lane * h_in + H_lane, H_lane)  # the chunk's state enters at lane 0
            _, _, _, h_start = tl.associative_scan((P_lane, H_lane, tl.full(P_lane.shape, 1.0, tl.float32),
                                                    tl.zeros_like(H_lane)), 1, _combine_excl)
            h_start = tl.where(k2 == 0, h_in, h_start)  # the state entering each lane
            h = H + P * h_start[:, None, :]

            # adjoint lambda_t = a_{t+1} lambda_{t+1} + g_y_t C_t, run backwards: within each lane's rows read
            # reversed (a register renaming), then across the lanes read reversed (a flip within the warp)
            g_yC = g_y * Cn
            decay_next = _decay(dt_next, A2, restart_next, HAS_RESTART)
            Q, Lr = tl.associative_scan((tl.flip(decay_next, 1), tl.flip(g_yC, 1)), 1, _combine)
            Q_lane, L_lane = _flip_lanes(_last_row(Q, ROWS), LANES), _flip_lanes(_last_row(Lr, ROWS), LANES)
            L_lane = tl.where(k2 == 0, Q_lane * lam_in + L_lane, L_lane)  # lambda from the later chunk
            _, lam_first, _, lam_start = tl.associative_scan(
                (Q_lane, L_lane, tl.full(Q_lane.shape, 1.0, tl.float32), tl.zeros_like(L_lane)), 1, _combine_excl)
            lam_start = tl.where(k2 == 0, lam_in, lam_start)  # lambda entering each lane from its right (reversed)
            lam = tl.flip(Lr + Q * _flip_lanes(lam_start, LANES)[:, None, :], 1)
            # lambda at the chunk's first step (the last lane of the reversed order), for the chunk before
            tl.store(lam_ptr + state_row[:, None] + n + 0 * k2, lam_first,
                     mask=(k2 == LANES - 1) & d_mask[:, None])

            q = lam * (h - x)  # lambda_t a_t h_{t-1} (exactly 0 at a restart, where a_t = 0 gives h = x)
            g_u_acc += lam * Bn
            g_dt_acc += A_n[:, None, None] * q
            g_A_old = tl.load(g_A_ptr + state_row + n)
            tl.store(g_A_ptr + state_row + n, g_A_old + tl.sum(tl.sum(q * dt, axis=1), axis=1), mask=d_mask)
            g_inp = lam * dtu  # d/dB
            g_hC = h * g_y  # d/dC
            # dB and dC are float32 buffers padded to whole chunks (L_PAD steps)
            g_bc = _bc_offsets(batch_id, group, n, t, G, N, L_PAD, GROUPED)
            if BLOCK_D == 1:  # one channel: no sum over channels and no mask (the padded steps add zeros:
                #               dt u and dL/dy are 0 there)
                tl.atomic_add(g_B_ptr + g_bc, g_inp, sem="relaxed")
                tl.atomic_add(g_C_ptr + g_bc, g_hC, sem="relaxed")
            elif GROUPED:
                tl.atomic_add(g_B_ptr + g_bc, g_inp, mask=mask, sem="relaxed")
                tl.atomic_add(g_C_ptr + g_bc, g_hC, mask=mask, sem="relaxed")
            else:  # summed over the program's channels first
                g_row = (batch_id * N + n) * L_PAD + c * BLOCK_L + step
                tl.atomic_add(g_B_ptr + g_row, tl.sum(g_inp, axis=0)[None], mask=c * BLOCK_L + step < L,
                              sem="relaxed")
                tl.atomic_add(g_C_ptr + g_row, tl.sum(g_hC, axis=0)[None], mask=c * BLOCK_L + step < L,
                              sem="relaxed")

        # sum_n lambda (u B + A a h_prev) = u sum_n lambda B + sum_n A lambda a h_prev
        g_u = g_u_acc * dt + g_y * skip[:, None, None]
        g_dt = g_dt_acc + g_u_acc * u
        if SOFTPLUS:
            g_dt = tl.where(raw <= 20.0, g_dt * _sigmoid(raw), g_dt)
        g_dt = tl.where(mask, g_dt, 0.0)
        tl.store(g_u_ptr + offs, g_u.to(g_u_ptr.dtype.element_ty), mask=mask)
        tl.store(g_delta_ptr + offs, g_dt.to(g_delta_ptr.dtype.element_ty), mask=mask)
        g_D_acc += tl.sum(tl.sum(g_y * u, axis=1), axis=1)
        g_bias_acc += tl.sum(tl.sum(g_dt, axis=1), axis=1)
        tl.debug_barrier()  # the chunk before reads lambda from other threads

    tl.store(g_D_ptr + batch_id * DIM + d, g_D_acc, mask=d_mask)
    tl.store(g_bias_ptr + batch_id * DIM + d, g_bias_acc, mask=d_mask)


# Launch shapes. A program owns BLOCK_D channels and walks time in chunks of BLOCK_L steps (the checkpoint stride,
# shared by both kernels), held as tile_rows(BLOCK_L) = 16 rows x 32 lanes. Each kernel's (BLOCK_D, warps) keeps
# one warp along time, so that its scans never cross warps. Chosen from the static report (python -m ops.compile_check selective_scan --report), not from timings:
# none were taken yet.
BLOCK_L = 512
FWD_BLOCK_D, FWD_WARPS = 1, 1
BWD_BLOCK_D, BWD_WARPS = 1, 1

# Test hooks. _TEST_TILES forces (BLOCK_D, BLOCK_L): tiny tiles keep interpreter tests fast and make small inputs
# span several ragged chunks and channel blocks. FILL_FRESH_BUFFERS_WITH_NAN fills fresh output buffers with NaN, so an unwritten
# entry fails the comparison.
_TEST_TILES = None
FILL_FRESH_BUFFERS_WITH_NAN = False


def _fresh(shape, like, dtype=None):
    dtype = dtype or like.dtype
    if FILL_FRESH_BUFFERS_WITH_NAN:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _tiles(backward=False):
    """(BLOCK_D, BLOCK_L, warps) of the forward or backward kernel."""
    block_d, warps = (BWD_BLOCK_D, BWD_WARPS) if backward else (FWD_BLOCK_D, FWD_WARPS)
    if _TEST_TILES is not None:
        return (*_TEST_TILES, warps)
    return block_d, BLOCK_L, warps


def tile_rows(block_l):
    """Steps per lane in the kernels' (BLOCK_D, ROWS, BLOCK_L // ROWS) tiles: 16 at the launch tile of 512 (one
    warp); small test tiles keep a few rows and a few lanes, so that both levels of the scans run."""
    return block_l // 32 if block_l >= 64 else max(block_l // 4, 1)


def _as_grouped(X):
    return X[:, None] if X.dim() == 3 else X  # (batch, N, L) -> (batch, 1, N, L)


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, restart, save):
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
            u, delta, A, B, C, D, z, delta_bias, restart, out, y, ckpt,
            dim, length, n_state, groups, dim // groups, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), SAVE_Y=save_y, GROUPED=groups > 1, HAS_RESTART=restart is not None,
            BLOCK_D=block_d, BLOCK_L=block_l, ROWS=tile_rows(block_l), num_warps=warps,
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, restart, y, ckpt)
            ctx.delta_softplus = bool(delta_softplus)
            ctx.b_shape, ctx.c_shape = b_shape, c_shape
            ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        return out, ckpt[:, :, n_chunks].clone()

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, restart, y, ckpt = ctx.saved_tensors
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
        scratch = torch.empty(batch * grid[0] * block_d * block_l, device=u.device, dtype=torch.float32)
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, D, z, delta_bias, restart, y, ckpt, g_out.contiguous(),
            g_u, g_delta, g_z, g_A, g_B, g_C, g_D, g_bias, lam, scratch,
            dim, length, n_chunks * block_l, n_state, groups, dim // groups, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, GROUPED=groups > 1, HAS_RESTART=restart is not None,
            BLOCK_D=block_d, BLOCK_L=block_l, ROWS=tile_rows(block_l), num_warps=warps,
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
                g_h0, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, seq_idx=None):
    """Triton selective scan for variable B/C; same arguments and results as the reference (seq_idx included:
    packed documents restart in the kernel, a zero decay at each document's first step)."""
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
    out, last = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                      restart_flags(seq_idx, u), save)
    return (out, last) if return_last_state else out

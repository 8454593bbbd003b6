"""Fused Triton kernels for BASED Taylor linear attention, forward and backward (see reference.py).

Design (flash-attention style tiling of the Taylor scores; K = feature dim is small, 16 in BASED):
- forward: one program per (query tile of BT rows, batch*head). It walks the key tiles before the query tile
  without masks, then the diagonal tiles with the causal mask; scores s = scale q.k^T on the tensor cores,
  A = 1 + s + s^2/2 in fp32 registers, the row sums z and A v accumulated in fp32. The normalisation is fused:
  o = A v / (z + eps) is written once in the input dtype, and g = 1/(z + eps) (fp32, B*H*T numbers) is kept
  for the backward. Inputs are read in their (B, T, H, D) layout through their own strides: no transposes, and
  no copies of q, k, v that are strided slices of one fused projection.
  The longest query tiles (the last ones) are launched first so that short ones fill the tail of the grid.
- backward: with g and dz_t = -g_t (do_t . o_t) (a small row-wise pre-pass), dA[t, s] = g_t do_t.v_s + dz_t,
  dS = dA (1 + s), dq = scale dS k, dk = scale dS^T q, dv = (A g)^T do. One program per (tile i, batch*head)
  computes dq of query tile i (walking keys 0..i) and dk, dv of key tile i (walking queries i..end): the two
  walks together cover every tile of the sequence once, so every program does the same work (no tail
  imbalance along the causal triangle) and there are no atomics: each output element is written by one program.
- fp32 inputs use IEEE fp32 dot products (no TF32) so they match the reference to 2e-4.
"""
import torch
import triton
import triton.language as tl

from ops._backend import triton_interpreting

# Set by tests: fill fresh output buffers with NaN so that any entry a kernel forgets to write shows up.
FILL_FRESH_BUFFERS_WITH_NAN = False

# (BT, BS, num_warps, num_stages): tile of rows a program owns, tile of the inner walk (BT % BS == 0). Not timed
# yet: chosen from ptxas's register report for sm_90 at K=16, V=64 (no GPU in the session that wrote them): the
# 16-bit picks use wgmma with no spills (forward 127 registers at 8 warps, backward 236); fp32 (IEEE dots, no tensor
# cores) needs smaller tiles to stay out of local memory. A GPU session should time the alternatives.
# 16-bit backward: one warpgroup (4 warps, wgmma's 64 rows) per 64 rows of the tile, so no two warpgroups compute
# the same rows' scores and dA. Checked with ptxas for sm_90 (bf16, K=16, V=64): (128, 32, 8) and (64, 32, 4) use
# 255 registers and spill nothing; (64, 64, 4) spills 28 bytes and (128, 64, 8) 4; the former (64, 64, 8) put two
# warpgroups on 64 rows. (128, 32, 8) halves the programs that re-read every key and query tile.
FORWARD_BLOCKS = {"16bit": (128, 64, 8, 2), "fp32": (64, 32, 4, 2)}
BACKWARD_BLOCKS = {"16bit": (128, 32, 8, 2), "fp32": (32, 32, 4, 2)}
PREPASS_ROWS = 64  # rows per program of the small backward pre-pass (dz)


def _fresh(shape, dtype, device) -> torch.Tensor:
    if FILL_FRESH_BUFFERS_WITH_NAN:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation. PRECISION "upcast" is for the CPU interpreter, whose bf16 tl.dot multiplies
    raw bit patterns (triton-lang/triton#11584): the operands go to fp32 first, which is exact for bf16/fp16, so
    the products are the ones a tensor core forms."""
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _taylor(s):
    return 1.0 + s + 0.5 * s * s


@triton.jit
def _fwd_tile(b_q, k, v, rows, start, T, scale, stride_qt, stride_vt, cols_k, cols_v, in_k, in_v,
              BS: tl.constexpr, DIAGONAL: tl.constexpr, PRECISION: tl.constexpr):
    """Row sums of A and A v for one key tile. Off the diagonal every pair is causal and every key exists."""
    keys = start + tl.arange(0, BS)
    key_ok = keys < T if DIAGONAL else keys >= 0
    b_k = tl.load(k + keys[:, None] * stride_qt + cols_k[None, :], mask=key_ok[:, None] & in_k[None, :], other=0.0)
    b_v = tl.load(v + keys[:, None] * stride_vt + cols_v[None, :], mask=key_ok[:, None] & in_v[None, :], other=0.0)
    a = _taylor(_mm(b_q, tl.trans(b_k), PRECISION) * scale)
    if DIAGONAL:  # the causal mask also drops keys past T for every row that is stored
        a = tl.where(rows[:, None] >= keys[None, :], a, 0.0)
    return tl.sum(a, axis=1), _mm(a.to(b_v.dtype), b_v, PRECISION)


@triton.jit
def _based_fwd_kernel(
    q, k, v, o, g,
    stride_qb, stride_qt, stride_qh, stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh,
    T, H, scale, eps,
    K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, USE_NORM: tl.constexpr, PRECISION: tl.constexpr,
):
    # the last query tiles walk the most keys: launch them first so the short ones fill the tail
    i_t = tl.num_programs(0) - 1 - tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    q += i_b * stride_qb + i_h * stride_qh
    k += i_b * stride_qb + i_h * stride_qh
    v += i_b * stride_vb + i_h * stride_vh
    o += i_b * stride_ob + i_h * stride_oh

    rows = i_t * BT + tl.arange(0, BT)
    cols_k, cols_v = tl.arange(0, BK), tl.arange(0, BV)
    in_k, in_v = cols_k < K, cols_v < V
    b_q = tl.load(q + rows[:, None] * stride_qt + cols_k[None, :], mask=(rows[:, None] < T) & in_k[None, :], other=0.0)
    acc = tl.zeros([BT, BV], dtype=tl.float32)
    z = tl.zeros([BT], dtype=tl.float32)
    for start in range(0, i_t * BT, BS):
        dz, dacc = _fwd_tile(b_q, k, v, rows, start, T, scale, stride_qt, stride_vt, cols_k, cols_v, in_k, in_v,
                             BS, False, PRECISION)
        z += dz
        acc += dacc
    for start in range(i_t * BT, tl.minimum(i_t * BT + BT, T), BS):
        dz, dacc = _fwd_tile(b_q, k, v, rows, start, T, scale, stride_qt, stride_vt, cols_k, cols_v, in_k, in_v,
                             BS, True, PRECISION)
        z += dz
        acc += dacc

    if USE_NORM:
        b_g = 1.0 / (z + eps)
        acc = acc * b_g[:, None]
        tl.store(g + i_bh * T + rows, b_g, mask=rows < T)
    tl.store(o + rows[:, None] * stride_ot + cols_v[None, :], acc.to(o.dtype.element_ty),
             mask=(rows[:, None] < T) & in_v[None, :])


@triton.jit
def _based_bwd_prepass_kernel(
    o, do, g, dz, stride_vb, stride_vt, stride_vh, T, H,
    V: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
):
    """dz_t = -g_t (do_t . o_t): the gradient reaching the normaliser z_t (o is the normalised output)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    base = i_b * stride_vb + i_h * stride_vh
    rows = i_t * BT + tl.arange(0, BT)
    cols = tl.arange(0, BV)
    mask = (rows[:, None] < T) & (cols[None, :] < V)
    b_o = tl.load(o + base + rows[:, None] * stride_vt + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b_do = tl.load(do + base + rows[:, None] * stride_vt + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b_g = tl.load(g + i_bh * T + rows, mask=rows < T, other=0.0)
    tl.store(dz + i_bh * T + rows, -b_g * tl.sum(b_o * b_do, axis=1), mask=rows < T)


@triton.jit
def _dq_tile(b_q, b_do, b_g, b_dz, k, v, rows, start, T, scale, stride_qt, stride_vt, cols_k, cols_v, in_k, in_v,
             BS: tl.constexpr, DIAGONAL: tl.constexpr, USE_NORM: tl.constexpr, PRECISION: tl.constexpr):
    """dS k (unscaled) for the query rows against one key tile."""
    keys = start + tl.arange(0, BS)
    key_ok = keys < T if DIAGONAL else keys >= 0
    b_k = tl.load(k + keys[:, None] * stride_qt + cols_k[None, :], mask=key_ok[:, None] & in_k[None, :], other=0.0)
    b_v = tl.load(v + keys[:, None] * stride_vt + cols_v[None, :], mask=key_ok[:, None] & in_v[None, :], other=0.0)
    s = _mm(b_q, tl.trans(b_k), PRECISION) * scale
    da = _mm(b_do, tl.trans(b_v), PRECISION)
    if USE_NORM:
        da = da * b_g[:, None] + b_dz[:, None]
    ds = da * (1.0 + s)
    if DIAGONAL:
        ds = tl.where(rows[:, None] >= keys[None, :], ds, 0.0)
    return _mm(ds.to(b_k.dtype), b_k, PRECISION)


@triton.jit
def _dkdv_tile(b_k, b_v, q, do, g, dz, rows, start, T, scale, stride_qt, stride_ot, cols_k, cols_v, in_k, in_v,
               BS: tl.constexpr, DIAGONAL: tl.constexpr, USE_NORM: tl.constexpr, PRECISION: tl.constexpr):
    """dS^T q (unscaled) and (A g)^T do for the key rows against one query tile. Query rows past T load as zeros
    with g = dz = 0, so they add nothing."""
    queries = start + tl.arange(0, BS)
    in_t = queries < T
    b_q = tl.load(q + queries[:, None] * stride_qt + cols_k[None, :], mask=in_t[:, None] & in_k[None, :], other=0.0)
    b_do = tl.load(do + queries[:, None] * stride_ot + cols_v[None, :], mask=in_t[:, None] & in_v[None, :],
                   other=0.0).to(b_q.dtype)
    s = _mm(b_k, tl.trans(b_q), PRECISION) * scale  # [keys, queries]
    a = _taylor(s)
    da = _mm(b_v, tl.trans(b_do), PRECISION)
    if USE_NORM:
        b_g = tl.load(g + queries, mask=in_t, other=0.0)
        b_dz = tl.load(dz + queries, mask=in_t, other=0.0)
        a = a * b_g[None, :]
        da = da * b_g[None, :] + b_dz[None, :]
    ds = da * (1.0 + s)
    if DIAGONAL:
        causal = rows[:, None] <= queries[None, :]
        a = tl.where(causal, a, 0.0)
        ds = tl.where(causal, ds, 0.0)
    return _mm(ds.to(b_q.dtype), b_q, PRECISION), _mm(a.to(b_do.dtype), b_do, PRECISION)


@triton.jit
def _based_bwd_kernel(
    q, k, v, do, g, dz, dq, dk, dv,
    stride_qb, stride_qt, stride_qh, stride_vb, stride_vt, stride_vh,
    stride_dqb, stride_dqt, stride_dqh, stride_ob, stride_ot, stride_oh,
    T, H, scale,
    K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, USE_NORM: tl.constexpr, PRECISION: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    # q, k, v are read in place (they may be strided views of one fused projection); do, dq, dk, dv are dense
    qk_base = i_b * stride_qb + i_h * stride_qh
    dqk_base = i_b * stride_dqb + i_h * stride_dqh
    o_base = i_b * stride_ob + i_h * stride_oh
    q += qk_base
    k += qk_base
    dq += dqk_base
    dk += dqk_base
    v += i_b * stride_vb + i_h * stride_vh
    do += o_base
    dv += o_base
    g += i_bh * T
    dz += i_bh * T

    rows = i_t * BT + tl.arange(0, BT)
    cols_k, cols_v = tl.arange(0, BK), tl.arange(0, BV)
    in_k, in_v = cols_k < K, cols_v < V
    rows_qk = (rows[:, None] < T) & in_k[None, :]
    rows_v = (rows[:, None] < T) & in_v[None, :]
    tile_end = i_t * BT + BT

    # dq of the query rows of tile i_t: walk the keys up to the end of the tile
    b_q = tl.load(q + rows[:, None] * stride_qt + cols_k[None, :], mask=rows_qk, other=0.0)
    b_do = tl.load(do + rows[:, None] * stride_ot + cols_v[None, :], mask=rows_v, other=0.0).to(b_q.dtype)
    b_g = tl.zeros([BT], dtype=tl.float32)
    b_dz = tl.zeros([BT], dtype=tl.float32)
    if USE_NORM:
        b_g = tl.load(g + rows, mask=rows < T, other=0.0)
        b_dz = tl.load(dz + rows, mask=rows < T, other=0.0)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    for start in range(0, i_t * BT, BS):
        b_dq += _dq_tile(b_q, b_do, b_g, b_dz, k, v, rows, start, T, scale, stride_qt, stride_vt,
                         cols_k, cols_v, in_k, in_v, BS, False, USE_NORM, PRECISION)
    for start in range(i_t * BT, tl.minimum(tile_end, T), BS):
        b_dq += _dq_tile(b_q, b_do, b_g, b_dz, k, v, rows, start, T, scale, stride_qt, stride_vt,
                         cols_k, cols_v, in_k, in_v, BS, True, USE_NORM, PRECISION)
    tl.store(dq + rows[:, None] * stride_dqt + cols_k[None, :], (b_dq * scale).to(dq.dtype.element_ty), mask=rows_qk)

    # dk, dv of the key rows of tile i_t: walk the queries from the tile to the end
    b_k = tl.load(k + rows[:, None] * stride_qt + cols_k[None, :], mask=rows_qk, other=0.0)
    b_v = tl.load(v + rows[:, None] * stride_vt + cols_v[None, :], mask=rows_v, other=0.0)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    for start in range(i_t * BT, tl.minimum(tile_end, T), BS):
        ddk, ddv = _dkdv_tile(b_k, b_v, q, do, g, dz, rows, start, T, scale, stride_qt, stride_ot,
                              cols_k, cols_v, in_k, in_v, BS, True, USE_NORM, PRECISION)
        b_dk += ddk
        b_dv += ddv
    for start in range(tile_end, T, BS):
        ddk, ddv = _dkdv_tile(b_k, b_v, q, do, g, dz, rows, start, T, scale, stride_qt, stride_ot,
                              cols_k, cols_v, in_k, in_v, BS, False, USE_NORM, PRECISION)
        b_dk += ddk
        b_dv += ddv
    tl.store(dk + rows[:, None] * stride_dqt + cols_k[None, :], (b_dk * scale).to(dk.dtype.element_ty), mask=rows_qk)
    tl.store(dv + rows[:, None] * stride_ot + cols_v[None, :], b_dv.to(dv.dtype.element_ty), mask=rows_v)


def _widths(K: int, V: int) -> tuple[int, int]:
    return max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))


def _precision(dtype: torch.dtype) -> str:
    if triton_interpreting():
        return "upcast"
    return "ieee" if dtype == torch.float32 else "tf32"  # tf32 is ignored for 16-bit operands


def _readable_in_place(q, k, v):
    """q, k, v as the kernels read them: through their own strides, so slices of a fused projection are not
    copied. Copies only what the kernels cannot read: a feature dimension that is not contiguous, or q and k with
    different strides (they share one set of stride arguments)."""
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if q.stride() != k.stride():
        q, k = q.contiguous(), k.contiguous()
    return q, k, v


class BasedAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, use_norm, eps, forward_blocks, backward_blocks):
        q, k, v = _readable_in_place(q, k, v)
        B, T, H, K = q.shape
        V = v.shape[-1]
        BK, BV = _widths(K, V)
        BT, BS, warps, stages = forward_blocks
        o = _fresh(v.shape, q.dtype, q.device)
        g = _fresh((B, H, T), torch.float32, q.device) if use_norm else o  # o: an unused placeholder
        _based_fwd_kernel[(triton.cdiv(T, BT), B * H)](
            q, k, v, o, g,
            q.stride(0), q.stride(1), q.stride(2), v.stride(0), v.stride(1), v.stride(2),
            o.stride(0), o.stride(1), o.stride(2),
            T, H, scale, eps,
            K=K, V=V, BK=BK, BV=BV, BT=BT, BS=BS, USE_NORM=use_norm, PRECISION=_precision(q.dtype),
            num_warps=warps, num_stages=stages,
        )
        ctx.save_for_backward(q, k, v, o, g)
        ctx.scale, ctx.use_norm, ctx.backward_blocks = scale, use_norm, backward_blocks
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, g = ctx.saved_tensors
        do = do.contiguous()  # the same (dense) strides as o, dv
        B, T, H, K = q.shape
        V = v.shape[-1]
        BK, BV = _widths(K, V)
        BT, BS, warps, stages = ctx.backward_blocks
        dz = g
        if ctx.use_norm:
            dz = _fresh((B, H, T), torch.float32, q.device)
            _based_bwd_prepass_kernel[(triton.cdiv(T, PREPASS_ROWS), B * H)](
                o, do, g, dz, o.stride(0), o.stride(1), o.stride(2), T, H, V=V, BV=BV, BT=PREPASS_ROWS,
            )
        dq = _fresh(q.shape, q.dtype, q.device)
        dk = _fresh(k.shape, k.dtype, k.device)
        dv = _fresh(v.shape, v.dtype, v.device)
        _based_bwd_kernel[(triton.cdiv(T, BT), B * H)](
            q, k, v, do, g, dz, dq, dk, dv,
            q.stride(0), q.stride(1), q.stride(2), v.stride(0), v.stride(1), v.stride(2),
            dq.stride(0), dq.stride(1), dq.stride(2), do.stride(0), do.stride(1), do.stride(2),
            T, H, ctx.scale,
            K=K, V=V, BK=BK, BV=BV, BT=BT, BS=BS, USE_NORM=ctx.use_norm, PRECISION=_precision(q.dtype),
            num_warps=warps, num_stages=stages,
        )
        return dq, dk, dv, None, None, None, None, None


def based_attention_triton(q, k, v, scale: float, use_norm: bool = True, eps: float = 1e-6,
                           forward_blocks=None, backward_blocks=None) -> torch.Tensor:
    """Fused BASED attention; q, k (B, T, H, K), v (B, T, H, V), one dtype. Block sizes are for tests/tuning."""
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"based_attention (triton): q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for blocks in (forward_blocks, backward_blocks):
        if blocks is not None and blocks[0] % blocks[1]:
            raise ValueError(f"based_attention (triton): row tile {blocks[0]} must be a multiple of "
                             f"walk tile {blocks[1]}")
    kind = "fp32" if q.dtype == torch.float32 else "16bit"
    return BasedAttentionFunction.apply(q, k, v, float(scale), bool(use_norm), float(eps),
                                        tuple(forward_blocks or FORWARD_BLOCKS[kind]),
                                        tuple(backward_blocks or BACKWARD_BLOCKS[kind]))

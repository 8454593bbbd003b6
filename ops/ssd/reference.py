"""The definition of SSD (Mamba-2's state space dual), as mamba-ssm's ``mamba_chunk_scan_combined`` computes it.

Per head (h heads of p channels; heads share the n-wide B and C of their group as in mamba-ssm):

    dt'_t = softplus(dt_t + dt_bias) if dt_softplus else dt_t + dt_bias, clamped to dt_limit
    h_t   = exp(dt'_t A) h_{t-1} + dt'_t x_t B_t^T          state (p, n)
    y_t   = h_t C_t + D x_t,  times silu(z_t) when z is given

``ssd_chunked`` is the chunked (matmul) form, vectorised over time: inside a chunk of Q steps y is a masked
(Q, Q) matmul whose weights are C_t.B_s exp(a_t - a_s) dt'_s (a: the within-chunk cumulative log decay, so every
exponent is <= 0); across chunks the state at each chunk boundary is a weighted sum of the chunks' own states
(the decays between boundaries as one (c+1, c+1) matrix per head). Everything is computed in float32 at least.
``ssd_step`` is one recurrent step, for decoding.
"""
import math

import torch
import torch.nn.functional as F

from ops.chunked import causal_mask, document_masks, masked_exp, pad_time, padded_length

NO_LIMIT = (0.0, math.inf)


def discretize_dt(dt, dt_bias, dt_softplus: bool, dt_limit, dtype) -> torch.Tensor:
    """dt' in ``dtype``: bias, softplus (threshold 20, as mamba-ssm's kernels), then the clamp when one is set."""
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != NO_LIMIT:
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _skip_and_gate(y, x, D, z):
    """y + D x, times silu(z): y, x, z (..., h, p); D (h,) or (h, p)."""
    if D is not None:
        D = D.to(y.dtype)
        y = y + x.to(y.dtype) * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def chunk_scores(CB, log_decay, dts, pairs=None):
    """The intra-chunk weights C_t.B_s exp(a_t - a_s) dt'_s for s <= t (and s in t's document), else 0.

    CB (b, c, g, Q, Q) the products C_t.B_s; log_decay, dts (b, c, g, r, Q); pairs (b, c, Q, Q) bool or None
    (``DocumentMasks.pairs``). Returns (b, c, g, r, Q, Q)."""
    keep = causal_mask(CB.shape[-1], CB.device)
    if pairs is not None:
        keep = (keep & pairs)[:, :, None, None]                                 # (b, c, 1, 1, Q, Q)
    decay = masked_exp(log_decay[..., :, None] - log_decay[..., None, :], keep)
    return CB[:, :, :, None] * decay * dts[..., None, :]


def ssd_chunked(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False,
                dt_limit=NO_LIMIT, initial_states=None, seq_idx=None, return_final_states=False, *,
                scores=chunk_scores):
    """x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n). Returns y (b, l, h, p) in x's dtype, and the
    final state (b, h, p, n) in float32 (float64 for float64 inputs) when ``return_final_states``.

    ``scores``: what computes the intra-chunk weights, ``chunk_scores`` or a faster equal (ops/ssd/cpu.py)."""
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g                                                                  # heads per group
    dtype = torch.promote_types(x.dtype, torch.float32)
    Q = max(1, min(chunk_size, length))  # a chunk longer than the input would only add padding
    padded = padded_length(length, Q)
    c = padded // Q

    def chunks(t, *shape):
        return pad_time(t.to(dtype), padded).view(b, c, Q, *shape)

    xs, Bs, Cs = chunks(x, g, r, p), chunks(B, g, n), chunks(C, g, n)
    dts = chunks(discretize_dt(dt, dt_bias, dt_softplus, dt_limit, dtype), g, r).permute(0, 1, 3, 4, 2)  # (b,c,g,r,Q)
    log_decay = (dts * A.to(dtype).view(g, r, 1)).cumsum(-1)                  # a_t within each chunk
    masks = None if seq_idx is None else document_masks(seq_idx, Q)

    # 1. inside each chunk: y_t = sum_{s<=t} C_t.B_s exp(a_t - a_s) dt'_s x_s
    weights = scores(torch.einsum("bctgn,bcsgn->bcgts", Cs, Bs), log_decay, dts,
                     None if masks is None else masks.pairs)                    # (b, c, g, r, Q, Q)
    y = torch.einsum("bcgrts,bcsgrp->bctgrp", weights, xs)
    if c == 1 and initial_states is None and not return_final_states:
        # one chunk from a zero state: nothing enters it and no state is asked for (the CPU training shape)
        return _skip_and_gate(y.reshape(b, padded, h, p)[:, :length], x, D, z).to(x.dtype)

    # 2. each chunk's own state at its last step: sum_s exp(a_end - a_s) dt'_s x_s B_s^T
    to_end = torch.exp(log_decay[..., -1:] - log_decay) * dts                   # (b, c, g, r, Q)
    if masks is not None:
        to_end = to_end * masks.to_end[:, :, None, None]
    states = torch.einsum("bcgrs,bcsgrp,bcsgn->bcgrpn", to_end, xs, Bs)

    # 3. the state at every chunk boundary (the initial state at boundary 0, the final one at boundary c)
    if initial_states is None:
        initial = xs.new_zeros(b, 1, g, r, p, n)
    else:
        initial = initial_states.to(dtype).view(b, 1, g, r, p, n)
    states = torch.cat([initial, states], dim=1)                                # (b, c + 1, g, r, p, n)
    at_boundary = F.pad(log_decay[..., -1].cumsum(1), (0, 0, 0, 0, 1, 0))      # (b, c + 1, g, r)
    carried = causal_mask(c + 1, x.device)[None, :, :, None, None]
    if masks is not None:
        ids = masks.boundary_ids
        carried = carried & (ids[:, :, None] == ids[:, None, :])[..., None, None]
    carry = masked_exp(at_boundary[:, :, None] - at_boundary[:, None, :], carried)  # (b, c+1, c+1, g, r)
    boundary_states = torch.einsum("bzjgr,bjgrpn->bzgrpn", carry, states)

    # 4. what the state entering each chunk adds: exp(a_t) C_t . h_start
    from_start = torch.exp(log_decay)                                           # (b, c, g, r, Q)
    if masks is not None:
        from_start = from_start * masks.from_start[:, :, None, None]
    y = y + torch.einsum("bctgn,bcgrpn,bcgrt->bctgrp", Cs, boundary_states[:, :-1], from_start)

    y = _skip_and_gate(y.reshape(b, padded, h, p)[:, :length], x, D, z).to(x.dtype)
    if return_final_states:
        return y, boundary_states[:, -1].reshape(b, h, p, n)
    return y


def ssd_step(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=NO_LIMIT):
    """One step, updating ``state`` (b, h, p, n) in place (float32 or wider). x, z (b, h, p); dt (b, h);
    B, C (b, g, n). Returns y (b, h, p) in x's dtype."""
    h, g = x.shape[1], B.shape[1]
    dtype = state.dtype
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit, dtype)               # (b, h)
    Bh = B.to(dtype).repeat_interleave(h // g, dim=1)                          # (b, h, n)
    Ch = C.to(dtype).repeat_interleave(h // g, dim=1)
    decay = torch.exp(dt * A.to(dtype))
    state.mul_(decay[..., None, None]).add_((dt[..., None] * x.to(dtype))[..., None] * Bh[:, :, None])
    y = torch.einsum("bhpn,bhn->bhp", state, Ch)
    return _skip_and_gate(y, x, D, z).to(x.dtype)

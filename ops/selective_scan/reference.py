"""The selective scan (Mamba-1 SSM), defined in plain PyTorch with float32 accumulation.

Per batch b, channel d and state index n:
    delta_t = softplus(delta_t + delta_bias)            (bias and softplus optional)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B[n, t] * u_t      (h_{-1} = initial_state or 0)
    y_t     = sum_n C[n, t] * h_t[n] + D[d] * u_t
    out_t   = y_t * silu(z_t)                            (gate optional)

Tensor layouts follow mamba_ssm's ``selective_scan_fn``: u, delta, z (batch, dim, L); A (dim, N); B, C either
(dim, N) time-invariant, (batch, N, L) variable, or (batch, G, N, L) variable and shared by dim // G channels.

The training path is a chunked scan: inside each chunk of ``chunk_size`` steps a log2(chunk_size)-step
parallel prefix (products of decays, which stay in (0, 1], so no exp overflow), then one recurrence step per
chunk carries the state across chunk boundaries using the chunk's cumulative log-decay. No Python loop runs
per timestep. ``selective_scan_step`` is the one-token recurrent update used for decoding.
"""
import torch
import torch.nn.functional as F

CHUNK_SIZE = 64


def _check_real(A: torch.Tensor):
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (real A only, as in Mamba-1 language models)")


def expand_bc(X: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """B or C in any accepted layout -> float32 (batch or 1, dim, L, N), broadcastable against (batch, dim, L, N)."""
    X = X.float()
    if X.dim() == 2:  # (dim, N): the same for every step
        return X[None, :, None, :]
    if X.dim() == 3:  # (batch, N, L): shared by every channel
        return X.transpose(1, 2)[:, None]
    if X.dim() == 4:  # (batch, G, N, L): channel d reads group d // (dim // G)
        groups = X.shape[1]
        if dim % groups:
            raise ValueError(f"selective_scan: dim {dim} is not divisible by the number of B/C groups {groups}")
        return X.transpose(2, 3).repeat_interleave(dim // groups, dim=1)
    raise ValueError(f"selective_scan: B and C must have 2, 3 or 4 dimensions, got shape {tuple(X.shape)}")


def discretize_delta(delta: torch.Tensor, delta_bias=None, delta_softplus: bool = False) -> torch.Tensor:
    """delta (batch, dim, ...) -> float32 softplus(delta + delta_bias[dim]) (bias and softplus optional)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float().view(-1, *([1] * (delta.dim() - 2)))
    return F.softplus(delta) if delta_softplus else delta


def _prefix_scan(decay: torch.Tensor, inp: torch.Tensor, dim: int):
    """Inclusive scan of h_t = decay_t * h_{t-1} + inp_t along ``dim`` from h = 0 (Hillis-Steele, log2 steps).

    Returns (cumulative decay products, states). Every step is a whole-tensor operation.
    """
    length = decay.shape[dim]
    shift = 1
    while shift < length:
        # combine element t with element t - shift: (a, b) o (a', b') = (a a', a b' + b)
        prev_decay = decay.narrow(dim, 0, length - shift)
        prev_inp = inp.narrow(dim, 0, length - shift)
        head_decay, tail_decay = decay.narrow(dim, 0, shift), decay.narrow(dim, shift, length - shift)
        head_inp, tail_inp = inp.narrow(dim, 0, shift), inp.narrow(dim, shift, length - shift)
        inp = torch.cat([head_inp, tail_inp + tail_decay * prev_inp], dim)
        decay = torch.cat([head_decay, tail_decay * prev_decay], dim)
        shift *= 2
    return decay, inp


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, chunk_size: int = CHUNK_SIZE):
    _check_real(A)
    dtype_in = u.dtype
    batch, dim, length = u.shape
    delta = discretize_delta(delta, delta_bias, delta_softplus)              # (b, d, L)
    u32, A32 = u.float(), A.float()
    B4, C4 = expand_bc(B, dim, length), expand_bc(C, dim, length)          # (b|1, d|1, L|1, N)

    if length == 0:
        state = initial_state.float() if initial_state is not None else u32.new_zeros(batch, dim, A.shape[1])
        return (u.new_zeros(u.shape), state) if return_last_state else u.new_zeros(u.shape)
    chunk_size = min(chunk_size, length)  # no padding beyond one chunk for short sequences
    n_chunks = -(-length // chunk_size)
    pad = n_chunks * chunk_size - length
    # padded steps have delta = 0: decay 1 and no input, so the state passes through unchanged
    delta_p = F.pad(delta, (0, pad))
    u_p = F.pad(u32, (0, pad))
    log_decay = delta_p[..., None] * A32[None, :, None, :]                  # (b, d, Lp, N)
    B_p = F.pad(B4, (0, 0, 0, pad)) if B4.shape[2] > 1 else B4
    inp = (delta_p * u_p)[..., None] * B_p                                  # (b, d, Lp, N)

    shape = (batch, dim, n_chunks, chunk_size, A.shape[1])
    log_decay = log_decay.reshape(shape)
    decay_prod, local = _prefix_scan(log_decay.exp(), inp.reshape(shape), dim=3)
    # state entering each chunk: one recurrence step per chunk, with the chunk's total decay
    chunk_decay = log_decay.sum(3).exp()                                    # (b, d, chunks, N)
    state = initial_state.float() if initial_state is not None else u32.new_zeros(batch, dim, A.shape[1])
    entering = []
    for k in range(n_chunks):
        entering.append(state)
        state = chunk_decay[:, :, k] * state + local[:, :, k, -1]
    h = local + decay_prod * torch.stack(entering, 2)[:, :, :, None]        # (b, d, chunks, T, N)
    h = h.reshape(batch, dim, n_chunks * chunk_size, -1)[:, :, :length]

    y = (h * C4).sum(-1)
    if D is not None:
        y = y + D.float()[:, None] * u32
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(dtype_in)
    return (out, state) if return_last_state else out


def selective_scan_step(state, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """One recurrent step, updating ``state`` (batch, dim, N) float32 in place.

    u, delta, z: (batch, dim); B, C: (batch, N) or (batch, G, N). Returns out (batch, dim) in u's dtype.
    """
    _check_real(A)
    dim = u.shape[1]
    delta = discretize_delta(delta, delta_bias, delta_softplus)              # (b, d)
    Bf, Cf = B.float(), C.float()
    if Bf.dim() == 3:  # grouped
        Bf = Bf.repeat_interleave(dim // Bf.shape[1], dim=1)
        Cf = Cf.repeat_interleave(dim // Cf.shape[1], dim=1)
    else:
        Bf, Cf = Bf[:, None], Cf[:, None]
    decay = torch.exp(delta[..., None] * A.float())
    state.mul_(decay).add_((delta * u.float())[..., None] * Bf)
    y = (state * Cf).sum(-1)
    if D is not None:
        y = y + D.float() * u.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)

"""The generalized (diagonal plus low-rank) delta rule in plain PyTorch: the definition of ``ops.dplr_delta_rule``.

Per head, with the state S (K, V) and row vectors q_t, k_t, a_t, b_t (K) and v_t (V):

    S_t = (diag(exp(gk_t)) + b_t^T a_t) S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t

i.e. the low-rank part reads the old state along a_t (u_t = a_t S_{t-1}, a row of V numbers) and writes it back
along b_t. This is fla's ``chunk_dplr_delta_rule`` transposed: fla writes the state as (V, K),
S_t = S_{t-1} (Diag(exp(gk_t)) + a_t b_t^T) + v_t k_t^T, and stores it as (K, V) like us.

The chunked form (``dplr_delta_rule_chunked``, the training path) is vectorised over time: within a chunk of C
steps the pairwise decays exp(G_t - G_s) (G the within-chunk cumulative sum of gk) factor as exp(G_t) * exp(-G_s)
while every |G| is below ``SAFE_LOG_RANGE`` (RWKV-7's decays, >= -0.61 per step, always are), which turns them
into matrix products; stronger decays switch to forming each pair from its difference, so they stay finite; the
low-rank reads u of a chunk solve one unit
lower-triangular system (the UT transform); only the (K, V) state is carried from chunk to chunk in a loop over
chunks. Everything accumulates in float32 (float64 inputs stay float64). ``dplr_delta_rule_step`` is one step,
for decoding.
"""
import torch

DEFAULT_CHUNK_SIZE = 32
# up to 256 tokens, chunks of 16 are faster on CPU (smaller (C, C) products and solve; rough interleaved checks under
# load); longer sequences keep DEFAULT_CHUNK_SIZE
SHORT_CHUNK_SIZE, SHORT_SEQUENCE = 16, 256
# Within a chunk, pairwise decays factor as exp(G_t) * exp(-G_s) when every |G| stays below this (exp(40) ~ 2e17,
# far from float32's ~3e38 even times the inputs); beyond it (strong decays) each pair is formed from its difference.
SAFE_LOG_RANGE = 40.0


def _chunks(x: torch.Tensor, chunk: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, H, D) -> (B, H, N, C, D) in ``dtype``, zero-padded at the end to N * C steps (a zero step leaves the
    state unchanged: decay exp(0) = 1, no low-rank read or write, no key)."""
    B, T, H, D = x.shape
    pad = (-T) % chunk
    x = x.to(dtype).transpose(1, 2)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(B, H, -1, chunk, D)


def _pair_decays(G_to: torch.Tensor, G_from: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """exp(G_to[t] - G_from[s]) per key channel where ``keep[t, s]``, else 0: (..., C, C, K)."""
    diff = G_to.unsqueeze(-2) - G_from.unsqueeze(-3)
    return diff.masked_fill(~keep[:, :, None], float("-inf")).exp()


def dplr_delta_rule_chunked(q, k, v, a, b, gk, scale: float | None = None, initial_state=None,
                            output_final_state: bool = False, chunk_size: int | None = None):
    """q, k, a, b, gk (B, T, H, K); v (B, T, H, V); initial_state (B, H, K, V) or None.

    Returns (o (B, T, H, V) in q's dtype, final state (B, H, K, V) in the accumulation dtype, or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    out_dtype, dtype = q.dtype, torch.promote_types(q.dtype, torch.float32)
    if chunk_size is None:
        chunk_size = SHORT_CHUNK_SIZE if T <= SHORT_SEQUENCE else DEFAULT_CHUNK_SIZE
    C = max(1, min(chunk_size, T))
    q, k, a, b, gk = (_chunks(x, C, dtype) for x in (q, k, a, b, gk))
    v = _chunks(v, C, dtype)
    N = q.shape[2]

    G = gk.cumsum(-2)               # log decay from the chunk's start through step t
    G_before = G - gk               # ... through step t - 1: what u_t (read before step t's decay) sees
    ones = torch.ones(C, C, dtype=torch.bool, device=q.device)
    upto, before = ones.tril(), ones.tril(-1)  # s <= t: o_t sees S_t, which holds step s; s < t: u_t reads S_{t-1}
    if max(G.abs().amax().item(), G_before.abs().amax().item()) <= SAFE_LOG_RANGE:
        # exp(G_t - G_s) = exp(G_t) exp(-G_s), both far from overflow: plain (C, K) @ (K, C) products
        k_from, b_from = k * (-G).exp(), b * (-G).exp()
        q_to, a_to = q * G.exp(), a * G_before.exp()
        A_qk, A_qb = ((q_to @ x.transpose(-1, -2)).masked_fill(~upto, 0) for x in (k_from, b_from))
        A_ak = (a_to @ k_from.transpose(-1, -2)).masked_fill(~before, 0)
        A_ab = a_to @ b_from.transpose(-1, -2)  # only its strict lower triangle is read, by the unitriangular solve
    else:  # strong decays: every pairwise decay from its own difference, (C, C, K) per chunk
        to_q, to_a = _pair_decays(G, G, upto), _pair_decays(G_before, G, before)
        A_qk = torch.einsum("...tk,...tsk,...sk->...ts", q, to_q, k)
        A_qb = torch.einsum("...tk,...tsk,...sk->...ts", q, to_q, b)
        A_ak = torch.einsum("...tk,...tsk,...sk->...ts", a, to_a, k)
        A_ab = torch.einsum("...tk,...tsk,...sk->...ts", a, to_a, b)

    # u = A_ab u + A_ak v + (a * exp(G_before)) S0: solve (I - A_ab) u = ..., unit lower-triangular
    # (the diagonal and upper triangle of -A_ab are never read: unitriangular=True; one solve for both right sides)
    solved = torch.linalg.solve_triangular(-A_ab, torch.cat([a * G_before.exp(), A_ak @ v], dim=-1), upper=False,
                                           unitriangular=True)
    u_from_state, u_intra = solved.split([K, V], dim=-1)

    # o = scale * (q_eff S0 + A_qk v + A_qb u_intra), with q_eff = q * exp(G) + A_qb u_from_state
    o_intra = A_qk @ v + A_qb @ u_intra
    q_eff = q * G.exp() + A_qb @ u_from_state
    # the state at the chunk's end: S_end = transition S0 + written
    to_end = (G[..., -1:, :] - G).exp()
    k_end, b_end = k * to_end, b * to_end
    transition = torch.diag_embed(G[..., -1, :].exp()) + b_end.transpose(-1, -2) @ u_from_state
    written = k_end.transpose(-1, -2) @ v + b_end.transpose(-1, -2) @ u_intra

    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    starts = []
    for n in range(N):  # one (K, K) @ (K, V) product per chunk: the only sequential part
        starts.append(state)
        state = transition[:, :, n] @ state + written[:, :, n]
    o = scale * (o_intra + q_eff @ torch.stack(starts, dim=2))
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(out_dtype), (state if output_final_state else None)


def dplr_delta_rule_step(q, k, v, a, b, gk, state: torch.Tensor, scale: float | None = None):
    """One step: q, k, a, b, gk (B, H, K); v (B, H, V); state (B, H, K, V) = S_{t-1}.

    Returns (o_t (B, H, V) in q's dtype, S_t in the state's dtype); the caller keeps S_t.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out_dtype, dtype = q.dtype, torch.promote_types(state.dtype, torch.float32)
    q, k, v, a, b, gk, S = (x.to(dtype) for x in (q, k, v, a, b, gk, state))
    read = torch.einsum("bhk,bhkv->bhv", a, S)
    S = gk.exp().unsqueeze(-1) * S + b.unsqueeze(-1) * read.unsqueeze(-2) + k.unsqueeze(-1) * v.unsqueeze(-2)
    o = scale * torch.einsum("bhk,bhkv->bhv", q, S)
    return o.to(out_dtype), S.to(state.dtype)

"""The gated delta rule, the definition (and, with no gate, the delta rule's: ``ops.delta_rule`` calls it).

Per head, with the state S (K, V), a row key k_t (1, K), value v_t (1, V), beta_t and log decay g_t:

    S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,        o_t = scale * q_t S_t

(fla's ``chunk_gated_delta_rule``; scale defaults to K^-0.5; q, k are used as given, any normalisation is the
caller's). Layout: q, k (B, T, H, K), v (B, T, H, V), g, beta (B, T, H), state (B, H, K, V). Everything runs in
float32 (float64 for float64 inputs).

The chunked (WY / UT-transform) form used for training and prefill. Write the update with the "new value"
u_t = beta_t (v_t - exp(g_t) k_t S_{t-1}), so S_t = exp(g_t) S_{t-1} + k_t^T u_t. Inside a chunk, with
G_t = g_1 + ... + g_t (cumulative log decay from the chunk's start) and S_0 the state entering it:

    S_t = exp(G_t) S_0 + sum_{s<=t} exp(G_t - G_s) k_s^T u_s
    u_t + sum_{s<t} beta_t exp(G_t - G_s) (k_t . k_s) u_s = beta_t v_t - beta_t exp(G_t) k_t S_0

The second line is a unit lower-triangular system (I + A) U = ..., solved once per chunk for all chunks at once
(the UT transform): U = U_v - W S_0 with U_v = (I + A)^-1 diag(beta) V and W = (I + A)^-1 diag(beta exp(G)) K.
Only the state passing from chunk to chunk is a loop (over T / chunk_size chunks, never over tokens):
S_0 of the next chunk = exp(G_C) S_0 + sum_s exp(G_C - G_s) k_s^T u_s. Any beta works ((I + A) is unit
triangular whatever beta is), so beta in (0, 2) (fla's ``allow_neg_eigval``) needs nothing special.

Packed rows (``seq_idx``): the state restarts at each document start after position 0 (position 0 continues
from ``initial_state``). In the chunked form that is a mask: a token sees the chunk's entering state only if no
document starts between the chunk's start and it, and sees another token of the chunk only in its document.
"""
import torch

from ops.packing import document_restarts

DEFAULT_CHUNK_SIZE = 32  # below fla's 64: faster on CPU at the zoo's training shapes (a rough check, under load)
# short sequences (T <= 256) take chunks of 16: the smaller (C, C) solve and products outweigh the longer chunk loop
# there (CPU, rough interleaved checks under load); longer ones keep DEFAULT_CHUNK_SIZE
SHORT_CHUNK_SIZE, SHORT_SEQUENCE = 16, 256


def default_chunk_size(seq_len: int) -> int:
    """The chunk length used when the caller gives none."""
    return SHORT_CHUNK_SIZE if seq_len <= SHORT_SEQUENCE else DEFAULT_CHUNK_SIZE
L2NORM_EPS = 1e-6  # fla's l2norm: x / sqrt(sum x^2 + eps)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for 16- and 32-bit inputs, float64 when any input is float64."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def l2_normalize(x: torch.Tensor, eps: float = L2NORM_EPS) -> torch.Tensor:
    """fla's ``l2norm`` (what its ``use_qk_l2norm_in_kernel`` applies to q and k): x / sqrt(sum x^2 + eps)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def gated_delta_rule_chunked(q, k, v, g, beta, scale: float | None = None, initial_state=None,
                             output_final_state: bool = False, seq_idx=None, chunk_size: int | None = None):
    """The chunked form (see the module docstring). ``g`` None: no decay (the delta rule). ``chunk_size`` None:
    ``default_chunk_size(T)``.

    Returns (o (B, T, H, V), final state (B, H, K, V) or None), both in the compute dtype.
    """
    acc = compute_dtype(q, k, v, g, beta, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else float(scale)
    C = default_chunk_size(T) if chunk_size is None else chunk_size
    N = -(-T // C)
    pad = N * C - T

    # padded positions: k = v = beta = g = 0, so they neither change the state nor decay it
    def chunks(x):  # (B, T, H, ...) -> (B, H, N, C, ...)
        x = x.to(acc)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        return x.reshape(B, N, C, H, *x.shape[3:]).movedim(3, 1)
    q_c, k_c, v_c, beta_c = chunks(q) * scale, chunks(k), chunks(v), chunks(beta)
    G = chunks(g).cumsum(-1) if g is not None else None                          # (B, H, N, C)

    # which pairs (t, s) inside a chunk interact, and which tokens see the chunk's entering state
    ones = torch.ones(B, 1, N, C, dtype=acc, device=q.device)
    pairs = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    sees_state, reaches_end, state_reaches_end = ones, ones, ones[..., 0]
    if seq_idx is not None:
        doc = document_restarts(seq_idx).long().cumsum(1)                          # (B, T), 0 where row starts
        doc = torch.cat([doc, doc[:, -1:].expand(B, pad)], dim=1)                  # padding joins the last one
        doc_before = torch.nn.functional.pad(doc, (1, 0))[:, :-1:C]                 # doc of the state entering
        doc, doc_before = doc.reshape(B, 1, N, C), doc_before.reshape(B, 1, N, 1)
        pairs = pairs & (doc[..., :, None] == doc[..., None, :])                    # (B, 1, N, C, C)
        sees_state = (doc == doc_before).to(acc)
        reaches_end = (doc == doc[..., -1:]).to(acc)
        state_reaches_end = sees_state[..., -1]

    # decay factors: exp(G_t - G_s) on the allowed pairs, exp(G_t) from the chunk's start, exp(G_C - G_s) to its end
    if G is not None:
        decay = (G[..., :, None] - G[..., None, :]).masked_fill(~pairs, float("-inf")).exp()
        from_start = G.exp() * sees_state
        to_end = (G[..., -1:] - G).exp() * reaches_end
        chunk_decay = G[..., -1].exp() * state_reaches_end                          # (B, H, N)
    else:
        decay = pairs.to(acc)
        from_start, to_end, chunk_decay = sees_state, reaches_end, state_reaches_end

    # the UT transform: (I + A) [U_v | W] = [diag(beta) V | diag(beta exp(G)) K], A strictly lower triangular
    # plain: the mask is just causal and every decay factor is 1, so no multiplies by them (the CPU's hot path)
    plain = G is None and seq_idx is None
    beta_k = beta_c[..., None] * k_c
    kk = beta_k @ k_c.transpose(-1, -2)                                            # (B, H, N, C, C)
    # no tril: a unitriangular solve reads only the strict lower triangle (and its gradient stays there)
    A = kk if plain else kk * decay
    rhs = torch.cat([beta_c[..., None] * v_c, beta_k if plain else (beta_c * from_start)[..., None] * k_c], dim=-1)
    solved = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    U_v, W = solved.split([V, K], dim=-1)

    # the only loop: the state entering each chunk (U = U_v - W S_0 needs it)
    state = (torch.zeros(B, H, K, V, dtype=acc, device=q.device) if initial_state is None
             else initial_state.to(acc))
    k_to_end = (k_c if plain else to_end[..., None] * k_c).transpose(-1, -2)      # (B, H, N, K, C)
    chunk_decay = chunk_decay.expand(B, H, N)
    entering, news = [], []
    for n in range(N):
        entering.append(state)
        U = U_v[:, :, n] - W[:, :, n] @ state
        news.append(U)
        state = (state if plain else chunk_decay[:, :, n, None, None] * state) + k_to_end[:, :, n] @ U
    S0 = torch.stack(entering, dim=2)                                              # (B, H, N, K, V)
    U = torch.stack(news, dim=2)                                                   # (B, H, N, C, V)

    # o_t = exp(G_t) q_t S_0 + sum_{s<=t} exp(G_t - G_s) (q_t . k_s) u_s
    qk = q_c @ k_c.transpose(-1, -2)
    qk = qk.tril() if plain else qk * decay
    o = (q_c @ S0 if plain else from_start[..., None] * (q_c @ S0)) + qk @ U
    o = o.movedim(1, 3).reshape(B, N * C, H, V)[:, :T]
    return o, (state if output_final_state else None)


def gated_delta_rule_step(q, k, v, g, beta, state, scale: float | None = None) -> torch.Tensor:
    """One decoding step. q, k (B, H, K), v (B, H, V), g (None or (B, H)), beta (B, H); updates ``state``
    (B, H, K, V, float32 or float64) in place and returns o (B, H, V) in the state's dtype."""
    dtype = state.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    if g is not None:
        state.mul_(g.to(dtype).exp()[..., None, None])
    u = beta[..., None] * (v - torch.einsum("bhk,bhkv->bhv", k, state))
    state.add_(k[..., :, None] * u[..., None, :])
    return scale * torch.einsum("bhk,bhkv->bhv", q, state)

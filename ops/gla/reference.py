"""The definition of gated linear attention (GLA), as fla's ``chunk_gla`` computes it.

Per head, with a per-key-channel decay (g: the log of the decay, <= 0):

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        state (K, V)
    o_t = scale * q_t S_t                           scale defaults to K^-0.5

``gla_chunked`` is the chunked form, vectorised inside each chunk: with G_t the within-chunk cumulative sum of g,
o_t = scale * (sum_{s<=t} sum_k q_tk k_sk exp(G_tk - G_sk) v_s + (q_t * exp(G_t)) S_start). The pairwise decays
exp(G_tk - G_sk) are formed directly, one (Q, Q, K) block per chunk, instead of as the product
(q exp(G)) (k exp(-G))^T of the fast kernels: exp(-G) overflows float32 once a chunk's decay passes ~88 nats,
while every exponent here is <= 0, so the result stays finite for any decay. That block costs Q times the memory
of q, hence small chunks (16); the state then passes from chunk to chunk in a loop over chunks (T / 16 small
element-wise steps), never over time steps. Everything is computed in float32 at least.
``gla_step`` is one recurrent step, for decoding.
"""
import torch

from ops.chunked import causal_mask, document_masks, masked_exp, pad_time, padded_length

DEFAULT_CHUNK_SIZE = 16


def gla_chunked(q, k, v, g, scale=None, initial_state=None, output_final_state=False, seq_idx=None,
                chunk_size=DEFAULT_CHUNK_SIZE):
    """q, k, g (B, T, H, K); v (B, T, H, V); initial_state (B, H, K, V). Returns (o (B, T, H, V) in q's dtype,
    final state (B, H, K, V) in float32 (float64 for float64 inputs), or None unless ``output_final_state``)."""
    batch, length, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    dtype = torch.promote_types(q.dtype, torch.float32)
    Q = max(1, min(chunk_size, length))  # a chunk longer than the input would only add padding
    padded = padded_length(length, Q)
    c = padded // Q

    def chunks(t):  # (B, T, H, D) -> (B, c, H, Q, D)
        return pad_time(t.to(dtype), padded).view(batch, c, Q, H, t.shape[-1]).transpose(2, 3)

    qs, ks, vs, G = chunks(q), chunks(k), chunks(v), chunks(g).cumsum(3)
    masks = None if seq_idx is None else document_masks(seq_idx, Q)

    # inside each chunk: A[t, s] = sum_k q_tk k_sk exp(G_tk - G_sk) for s <= t (same document)
    keep = causal_mask(Q, q.device)
    if masks is not None:
        keep = (keep & masks.pairs)[:, :, None]                                # (B, c, 1, Q, Q)
    decay = masked_exp(G[..., :, None, :] - G[..., None, :, :], keep[..., None])  # (B, c, H, Q, Q, K)
    scores = torch.einsum("bchtsk,bchsk->bchts", decay * qs[..., :, None, :], ks)
    o = torch.einsum("bchts,bchsv->bchtv", scores, vs)

    # each chunk's own state at its last step, and the decay of a whole chunk
    k_to_end = ks * torch.exp(G[..., -1:, :] - G)
    q_from_start = qs * torch.exp(G)
    chunk_decay = torch.exp(G[..., -1, :])                                     # (B, c, H, K)
    if masks is not None:
        k_to_end = k_to_end * masks.to_end[:, :, None, :, None]
        q_from_start = q_from_start * masks.from_start[:, :, None, :, None]
        ids = masks.boundary_ids
        chunk_decay = chunk_decay * (ids[:, 1:] == ids[:, :-1])[..., None, None]
    own_states = torch.einsum("bchsk,bchsv->bchkv", k_to_end, vs)

    # the state entering each chunk: one small element-wise step per chunk
    state = qs.new_zeros(batch, H, K, V) if initial_state is None else initial_state.to(dtype)
    entering = []
    for i in range(c):
        entering.append(state)
        state = state * chunk_decay[:, i, ..., None] + own_states[:, i]
    o = o + torch.einsum("bchtk,bchkv->bchtv", q_from_start, torch.stack(entering, dim=1))

    o = (o * scale).transpose(2, 3).reshape(batch, padded, H, V)[:, :length].to(q.dtype)
    return o, (state if output_final_state else None)


def gla_step(state, q, k, v, g, scale=None):
    """One step, updating ``state`` (B, H, K, V) in place (float32 or wider). q, k, g (B, H, K); v (B, H, V).
    Returns o (B, H, V) in q's dtype."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dtype = state.dtype
    state.mul_(torch.exp(g.to(dtype))[..., None]).add_(k.to(dtype)[..., None] * v.to(dtype)[..., None, :])
    return (scale * torch.einsum("bhk,bhkv->bhv", q.to(dtype), state)).to(q.dtype)

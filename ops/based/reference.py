"""BASED linear attention, the definition: 2nd-order Taylor approximation of softmax attention.

With s = scale * q.k (scale defaults to 1/sqrt(feature_dim)) every causal pair (t >= s) gets the weight

    A[t, s] = 1 + s + s^2 / 2 = phi(q_t) . phi(k_s)

and o_t = sum_s A[t, s] v_s, divided by z_t + eps with z_t = sum_s A[t, s] when ``use_norm``. This is fla's
``parallel_based(q, k, v, scale, use_norm)`` (the scale multiplies q.k; eps = 1e-6 is added to z). Layout:
q, k (batch, T, heads, feature_dim), v (batch, T, heads, head_dim). Everything accumulates in float32 (float64
for float64 inputs).

Three forms of the same function:
- ``based_attention_quadratic``: the masked T x T form, for tests.
- ``based_attention_chunked``: linear in T, for training and prefill: quadratic inside chunks, and between
  chunks the state sum phi(k) v^T over the packed Taylor features; takes and returns that state.
- ``based_step``: one token of recurrent decoding, O(1) in the number of tokens seen.
"""
import functools
import math

import torch

DEFAULT_EPS = 1e-6  # fla adds this to the normaliser


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for 16- and 32-bit inputs, float64 for float64 ones: the sums never run below float32."""
    return torch.promote_types(x.dtype, torch.float32)


def default_scale(feature_dim: int) -> float:
    return feature_dim ** -0.5


def expanded_dim(feature_dim: int) -> int:
    """Size of the packed Taylor features: 1 + d + d(d+1)/2 (the distinct entries of the symmetric x x^T)."""
    return 1 + feature_dim + feature_dim * (feature_dim + 1) // 2


def taylor_feature_map(x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """phi(x) with phi(q).phi(k) = 1 + scale q.k + (scale q.k)^2 / 2, over the last dimension of ``x``.

    phi(x) = [1, sqrt(scale) x, scale x_i^2 / sqrt(2) (i = j), scale x_i x_j (i < j)]: the upper triangle of
    vec(x x^T) / sqrt(2) with the off-diagonal entries weighted by sqrt(2), because each appears twice in the
    full outer product. With scale = 1/sqrt(d) this is the paper's [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))].
    Returns ``compute_dtype(x)`` (float32, or float64 for float64 x), last dimension ``expanded_dim(d)``.
    """
    d = x.shape[-1]
    scale = default_scale(d) if scale is None else scale
    x = x.to(compute_dtype(x))
    rows, cols, weight = _upper_triangle(d, x.device)
    second = x[..., rows] * x[..., cols] * (weight.to(x.dtype) * scale)
    return torch.cat([torch.ones_like(x[..., :1]), x * math.sqrt(scale), second], dim=-1)


@functools.lru_cache(maxsize=None)
def _upper_triangle(d: int, device: torch.device):
    """Index pairs i <= j of the d x d outer product and their weights (1/sqrt(2) on the diagonal, 1 off it);
    cached because decoding builds features for one token at a time."""
    rows, cols = torch.triu_indices(d, d, device=device)
    weight = torch.where(rows == cols, 2 ** -0.5, 1.0).to(device=device, dtype=torch.float64)
    return rows, cols, weight


def _taylor_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """A = 1 + s + s^2/2 with s = scale q.k for every pair of (..., t) and (..., s); inputs (B, T, H, K)."""
    s = torch.einsum("bthk,bshk->bhts", q, k) * scale
    return 1 + s + 0.5 * s * s


def based_attention_quadratic(q, k, v, scale: float | None = None, use_norm: bool = True, eps: float = DEFAULT_EPS):
    """The T x T masked form. Returns o (B, T, H, V) in float32 (float64 for float64 inputs)."""
    scale = default_scale(q.shape[-1]) if scale is None else scale
    acc = compute_dtype(q)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    T = q.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    a = _taylor_scores(q, k, scale).masked_fill(~causal, 0.0)
    o = torch.einsum("bhts,bshv->bthv", a, v)
    if use_norm:
        o = o / (a.sum(-1).transpose(1, 2).unsqueeze(-1) + eps)
    return o


def based_attention_chunked(q, k, v, scale: float | None = None, use_norm: bool = True, eps: float = DEFAULT_EPS,
                            chunk_size: int = 64, initial_state=None, output_final_state: bool = False):
    """Linear-time form: within a chunk the quadratic scores, across chunks the Taylor-feature state.

    ``initial_state``/final state: (kv_state (B, H, D, V), k_state (B, H, D)) with D = expanded_dim(K), the
    sums of phi(k) v^T and phi(k) over the tokens before (float32). Returns o (B, T, H, V) float32, and the
    final state when ``output_final_state`` (float64 throughout for float64 inputs).
    """
    acc = compute_dtype(q)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    N = -(-T // C)
    pad = N * C - T
    q, k, v = (torch.nn.functional.pad(x.to(acc), (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
    valid = (torch.arange(N * C, device=q.device) < T).to(acc)[None, :, None, None]

    phi_q = taylor_feature_map(q, scale)
    phi_k = taylor_feature_map(k, scale) * valid  # padded keys (phi(0) = [1, 0...]) must not enter the state
    chunks = lambda x: x.reshape(B, N, C, H, x.shape[-1])  # noqa: E731
    q_c, k_c, v_c, phi_q_c, phi_k_c = map(chunks, (q, k, v, phi_q, phi_k))

    # state at the start of each chunk: exclusive cumulative sum of the per-chunk increments
    kv_inc = torch.einsum("bnchd,bnchv->bnhdv", phi_k_c, v_c)
    k_inc = phi_k_c.sum(2)
    kv_before = kv_inc.cumsum(1) - kv_inc
    k_before = k_inc.cumsum(1) - k_inc
    if initial_state is not None:
        kv0, k0 = initial_state
        kv_before = kv_before + kv0.to(acc)[:, None]
        k_before = k_before + k0.to(acc)[:, None]
    num = torch.einsum("bnchd,bnhdv->bnchv", phi_q_c, kv_before)
    z = torch.einsum("bnchd,bnhd->bnch", phi_q_c, k_before)

    # inside each chunk: the quadratic masked scores
    s = torch.einsum("bnchk,bnshk->bnhcs", q_c, k_c) * scale
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    a = (1 + s + 0.5 * s * s).masked_fill(~causal, 0.0)
    num = num + torch.einsum("bnhcs,bnshv->bnchv", a, v_c)
    z = z + a.sum(-1).transpose(2, 3)

    o = num / (z.unsqueeze(-1) + eps) if use_norm else num
    o = o.reshape(B, N * C, H, V)[:, :T]
    if not output_final_state:
        return o
    kv_final = kv_inc.sum(1) + (0 if initial_state is None else initial_state[0].to(acc))
    k_final = k_inc.sum(1) + (0 if initial_state is None else initial_state[1].to(acc))
    return o, (kv_final, k_final)


def based_step(q, k, v, kv_state, k_state, scale: float | None = None, use_norm: bool = True, eps: float = DEFAULT_EPS):
    """One decoding step. q, k (B, H, K), v (B, H, V); updates the states (float32, or float64) in place and
    computes in their dtype; returns o (B, H, V)."""
    phi_q = taylor_feature_map(q, scale).to(kv_state.dtype)
    phi_k = taylor_feature_map(k, scale).to(kv_state.dtype)
    kv_state.add_(phi_k.unsqueeze(-1) * v.to(kv_state.dtype).unsqueeze(-2))
    k_state.add_(phi_k)
    o = torch.einsum("bhd,bhdv->bhv", phi_q, kv_state)
    if use_norm:
        o = o / (torch.einsum("bhd,bhd->bh", phi_q, k_state).unsqueeze(-1) + eps)
    return o

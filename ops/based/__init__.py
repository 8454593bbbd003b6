"""BASED Taylor linear attention: ``based_attention(q, k, v, scale=None, use_norm=True, backend="auto")``.

Same semantics and (batch, T, heads, dim) layout as fla's ``parallel_based``; see reference.py for the definition.
"""
import torch

from ops._backend import resolve_backend
from ops.based.reference import DEFAULT_EPS, based_attention_chunked
from ops.packing import DocumentLayout, check_seq_idx

# what the fused kernel handles in one tile per row; larger widths fall back to the reference under "auto"
TRITON_MAX_FEATURE_DIM = 128
TRITON_MAX_HEAD_DIM = 256
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def based_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                    use_norm: bool = True, backend: str = "auto", eps: float = DEFAULT_EPS,
                    seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Causal BASED linear attention. q, k: (B, T, H, K); v: (B, T, H, V). Returns (B, T, H, V) in q's dtype.

    A[t, s] = 1 + x + x^2/2 with x = scale * q_t.k_s (scale defaults to K^-0.5), o_t = sum_{s<=t} A[t, s] v_s,
    divided by sum_{s<=t} A[t, s] + eps when ``use_norm`` (eps = 1e-6 as in fla).
    seq_idx (B, T) integer, packed sequences (see ops.packing): the sums run over each document only. Every
    backend takes it: each document is gathered into its own row (padded at the end), run, and gathered back.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"based_attention: expected q, k (B, T, H, K) and v (B, T, H, V), got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if seq_idx is not None:
        check_seq_idx(seq_idx, q.shape[0], q.shape[1], "based_attention")
        layout = DocumentLayout(seq_idx)
        out = based_attention(*(layout.unpack(t) for t in (q, k, v)), scale, use_norm, backend, eps)
        return layout.repack(out)
    fits = (q.shape[-1] <= TRITON_MAX_FEATURE_DIM and v.shape[-1] <= TRITON_MAX_HEAD_DIM
            and q.dtype == k.dtype == v.dtype and q.dtype in TRITON_DTYPES)
    chosen = resolve_backend(backend, q.device, "based_attention")
    if chosen == "triton" and not fits:
        if backend == "triton":
            raise ValueError(f"based_attention: backend='triton' supports feature dim <= {TRITON_MAX_FEATURE_DIM}, "
                             f"head dim <= {TRITON_MAX_HEAD_DIM} and one dtype among float32, bfloat16, float16; "
                             f"got {q.shape[-1]}, {v.shape[-1]} and {q.dtype}, {k.dtype}, {v.dtype}")
        chosen = "reference"
    if chosen == "triton":
        from ops.based.triton import based_attention_triton
        return based_attention_triton(q, k, v, scale, use_norm, eps)
    return based_attention_chunked(q, k, v, scale, use_norm, eps).to(q.dtype)


__all__ = ["based_attention"]

"""BASED linear attention (Arora et al. 2024, "Simple linear attention language models balance the
recall-throughput tradeoff"): the 2nd-order Taylor feature map on small q, k projections, values at full head size.

The other two BASED layers are the trunk's own mixers: ``short_conv`` (gated short convolution) and
``attention`` with ``window`` (sliding-window softmax attention); configs/model/based.yaml interleaves them.
Packed rows (``seq_idx``): ``ops.based_attention`` runs each document in its own row, on every backend.
"""
import torch
from torch import nn

from ops.based import based_attention
from ops.based.reference import based_attention_chunked, based_step, expanded_dim
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_positive_int


@register_mixer("based_linear_attention")
class BasedLinearAttention(Mixer):
    """Causal Taylor linear attention.

    q, k: ``num_heads`` heads of ``feature_dim``; v: ``num_heads`` heads of head_dim = d_model / num_heads.
    Scores phi(q).phi(k) = 1 + q.k/sqrt(f) + (q.k)^2/(2f) with f = feature_dim, normalised by
    phi(q_t).sum_{s<=t} phi(k_s) + eps. Decoding keeps kv_state = sum phi(k) v^T and k_state = sum phi(k) over the
    1 + f + f(f+1)/2 distinct Taylor features (float32 accumulators): O(1) per token, independent of seq_len.
    """

    backends = ("auto", "reference", "triton")  # fla's kernels are a benchmark peer, not a backend

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", feature_dim: int = 16,
                 num_heads: int = 1, eps: float = 1e-6):
        super().__init__(d_model, layer_idx, backend)
        owner = type(self).__name__
        require_positive_int("feature_dim", feature_dim, owner)
        require_positive_int("num_heads", num_heads, owner)
        if d_model % num_heads:
            raise ValueError(f"{owner}: num_heads={num_heads} must divide d_model={d_model} "
                             "(the value heads split d_model)")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"{owner}: eps must be a non-negative number, got {eps!r}")
        self.feature_dim, self.num_heads, self.eps = feature_dim, num_heads, float(eps)
        self.head_dim = d_model // num_heads
        self.scale = feature_dim ** -0.5
        self.proj_q = nn.Linear(d_model, num_heads * feature_dim, bias=False)
        self.proj_k = nn.Linear(d_model, num_heads * feature_dim, bias=False)
        self.proj_v = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor):
        B, T, _ = x.shape
        q = self.proj_q(x).view(B, T, self.num_heads, self.feature_dim)
        k = self.proj_k(x).view(B, T, self.num_heads, self.feature_dim)
        v = self.proj_v(x).view(B, T, self.num_heads, self.head_dim)
        return q, k, v

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        B, T, _ = x.shape
        q, k, v = self._heads(x)
        if cache is None:
            y = based_attention(q, k, v, self.scale, use_norm=True, backend=self.backend, eps=self.eps,
                                seq_idx=seq_idx)
        elif T == 1:
            y = based_step(q[:, 0], k[:, 0], v[:, 0], cache["kv_state"], cache["k_state"], self.scale,
                           use_norm=True, eps=self.eps).unsqueeze(1)
        else:  # prefill, possibly continuing from an earlier state
            y, (kv_state, k_state) = based_attention_chunked(
                q, k, v, self.scale, use_norm=True, eps=self.eps,
                initial_state=(cache["kv_state"], cache["k_state"]), output_final_state=True)
            cache["kv_state"].copy_(kv_state)
            cache["k_state"].copy_(k_state)
        if cache is not None:
            cache.seen += T
        return self.out_proj(y.to(x.dtype).reshape(B, T, self.d_model))

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        # the states are running sums over every token seen: keep them in float32 at least, whatever the model dtype
        dtype = torch.promote_types(dtype or torch.float32, torch.float32)
        device = self.out_proj.weight.device if device is None else device
        D = expanded_dim(self.feature_dim)
        return Cache(
            kv_state=torch.zeros(batch_size, self.num_heads, D, self.head_dim, device=device, dtype=dtype),
            k_state=torch.zeros(batch_size, self.num_heads, D, device=device, dtype=dtype),
        )

    def state_size(self, seq_len: int) -> int:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"{type(self).__name__}: seq_len must be a non-negative integer, got {seq_len!r}")
        return self.num_heads * expanded_dim(self.feature_dim) * (self.head_dim + 1)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, feature_dim={self.feature_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, eps={self.eps}, backend={self.backend!r}")

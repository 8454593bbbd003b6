"""Causal multi-head softmax attention: the baseline every other mixer is measured against.

Rotary positions, optional sliding window, KV cache. Full attention runs through
``scaled_dot_product_attention``; a sliding window uses ``flex_attention`` with a block mask on CUDA and
a banded boolean mask elsewhere. Packed rows (``seq_idx``) add the block-diagonal document mask to the
boolean mask on every backend (flex_attention is not used then) and restart rotary positions per document.
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn

from ops._backend import resolve_backend
from ops.packing import positions_in_document
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.blocks.rotary import apply_rotary, rotary_tables
from zoo.checks import require_positive_int


def band_mask(q_positions: torch.Tensor, k_positions: torch.Tensor, window: int | None) -> torch.Tensor:
    """True where query i may attend key j: j <= i, and j > i - window when a window is set."""
    allowed = k_positions[None, :] <= q_positions[:, None]
    if window is not None:
        allowed &= k_positions[None, :] > q_positions[:, None] - window
    return allowed


@functools.lru_cache(maxsize=None)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)  # uncompiled flex_attention materialises the scores


@functools.lru_cache(maxsize=32)
def _window_block_mask(seq: int, window: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    def in_window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (kv_idx > q_idx - window)
    return create_block_mask(in_window, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device=device)


def _flex_sliding_window(q, k, v, window: int):
    """Sliding-window attention with flex_attention's block mask (skips fully masked tiles)."""
    return _compiled_flex_attention()(q, k, v, block_mask=_window_block_mask(q.shape[-2], window, q.device))


@register_mixer("attention")
class Attention(Mixer):
    backends = ("auto", "reference", "triton")  # "triton" = flex_attention for the sliding window on CUDA
    triton_runs_in_interpreter = False
    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", num_heads: int = 1,
                 window: int | None = None, rotary: bool = True, rotary_base: float = 10000.0, bias: bool = False):
        super().__init__(d_model, layer_idx, backend)
        require_positive_int("num_heads", num_heads, "Attention")
        if d_model % num_heads:
            raise ValueError(f"Attention: d_model={d_model} must be divisible by num_heads={num_heads}")
        if window is not None:
            require_positive_int("window", window, "Attention")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        if rotary and self.head_dim % 2:
            raise ValueError(f"Attention: rotary needs an even head_dim, got {self.head_dim} (d_model / num_heads)")
        self.window, self.rotary, self.rotary_base = window, rotary, rotary_base
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: torch.Tensor, first_position: int, seq_idx: torch.Tensor | None = None):
        batch, seq, _ = x.shape
        q, k, v = self.qkv_proj(x).view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary:
            if seq_idx is None:
                positions = torch.arange(first_position, first_position + seq, device=x.device)
                cos, sin = rotary_tables(positions, self.head_dim, self.rotary_base)
            else:  # a document run alone starts at position 0: per-row tables, broadcast over heads
                positions = positions_in_document(seq_idx)
                cos, sin = (t.view(batch, 1, seq, -1) for t in
                            rotary_tables(positions.flatten(), self.head_dim, self.rotary_base))
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        batch, seq, _ = x.shape
        first = cache.seen if cache is not None else 0
        q, k, v = self._heads(x, first, seq_idx)
        if seq_idx is not None:
            positions = torch.arange(seq, device=x.device)
            same_document = seq_idx[:, :, None] == seq_idx[:, None, :]            # (batch, query, key)
            mask = band_mask(positions, positions, self.window) & same_document
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        elif cache is None:
            y = self._attend_fresh(q, k, v)
        else:
            k = torch.cat([cache["k"], k.to(cache["k"].dtype)], dim=2)
            v = torch.cat([cache["v"], v.to(cache["v"].dtype)], dim=2)
            q_pos = torch.arange(first, first + seq, device=x.device)
            k_pos = torch.arange(first + seq - k.shape[2], first + seq, device=x.device)
            mask = band_mask(q_pos, k_pos, self.window)
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
            keep = k.shape[2] if self.window is None else min(self.window, k.shape[2])
            cache["k"], cache["v"] = k[:, :, -keep:], v[:, :, -keep:]
            cache.seen += seq
        return self.out_proj(y.transpose(1, 2).reshape(batch, seq, self.d_model))

    def _attend_fresh(self, q, k, v):
        if self.window is None or self.window >= q.shape[-2]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if q.is_cuda and resolve_backend(self.backend, q.device, "attention") == "triton":
            return _flex_sliding_window(q, k, v, self.window)
        positions = torch.arange(q.shape[-2], device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(positions, positions, self.window))

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        dtype = dtype or self.qkv_proj.weight.dtype
        device = device or self.qkv_proj.weight.device
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return Cache(k=empty, v=empty.clone())

    def state_size(self, seq_len: int) -> int:
        kept = seq_len if self.window is None else min(seq_len, self.window)
        return 2 * self.d_model * kept

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, window={self.window}, rotary={self.rotary}"

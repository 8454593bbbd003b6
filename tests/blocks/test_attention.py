import math

import pytest
import torch

from zoo.blocks.attention import Attention, band_mask


def naive_attention(mixer: Attention, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out with explicit loops over positions, as an independent check."""
    batch, seq, _ = x.shape
    q, k, v = mixer._heads(x, 0)
    out = torch.zeros_like(q)
    for t in range(seq):
        first = 0 if mixer.window is None else max(0, t - mixer.window + 1)
        scores = q[:, :, t: t + 1] @ k[:, :, first: t + 1].transpose(-1, -2) / math.sqrt(mixer.head_dim)
        out[:, :, t] = (scores.softmax(-1) @ v[:, :, first: t + 1])[:, :, 0]
    return mixer.out_proj(out.transpose(1, 2).reshape(batch, seq, -1))


@pytest.mark.parametrize("window", [None, 1, 4, 30])
def test_matches_naive_attention(window):
    torch.manual_seed(0)
    mixer = Attention(32, num_heads=4, window=window)
    x = torch.randn(2, 19, 32)
    torch.testing.assert_close(mixer(x), naive_attention(mixer, x), rtol=1e-5, atol=1e-5)


def test_window_bounds_the_state():
    mixer = Attention(32, num_heads=2, window=8)
    assert [mixer.state_size(n) for n in (3, 8, 100)] == [2 * 32 * 3, 2 * 32 * 8, 2 * 32 * 8]
    assert Attention(32).state_size(100) == 2 * 32 * 100


def test_band_mask():
    positions = torch.arange(5)
    mask = band_mask(positions, positions, window=2)
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]).bool()
    assert torch.equal(mask, expected)


def rotated(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoFormer's rotation written as complex multiplication: channel c and c + dim/2 form the number rotated by
    position * base^(-2c/dim). x: (..., seq, dim), in float64."""
    half = x.shape[-1] // 2
    frequencies = base ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    turn = torch.polar(torch.ones(len(positions), half, dtype=torch.float64),
                       positions.double()[:, None] * frequencies)
    pairs = torch.complex(x[..., :half].double(), x[..., half:].double()) * turn
    return torch.cat([pairs.real, pairs.imag], dim=-1)


def rotary_scores(mixer: Attention, x: torch.Tensor, first_position: int) -> torch.Tensor:
    """Each head's q.k scores (batch, heads, seq, seq), from the projection weights split into heads here, not by
    the mixer, with the rotation above."""
    batch, seq, d_model = x.shape
    w_q, w_k, _ = mixer.qkv_proj.weight.double().chunk(3, dim=0)
    heads = [slice(h * mixer.head_dim, (h + 1) * mixer.head_dim) for h in range(mixer.num_heads)]
    positions = torch.arange(first_position, first_position + seq)
    q = torch.stack([rotated(x.double() @ w_q[h].T, positions) for h in heads], dim=1)
    k = torch.stack([rotated(x.double() @ w_k[h].T, positions) for h in heads], dim=1)
    return q @ k.transpose(-1, -2)


def test_rotary_scores_depend_only_on_relative_position():
    """The same tokens placed at positions 0.. or 37.. give the same scores (relative positions), different from
    the scores without rotation; and the mixer computes exactly these scores, at either offset."""
    torch.manual_seed(0)
    mixer = Attention(16, num_heads=2).double()
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    at_start, shifted = rotary_scores(mixer, x, 0), rotary_scores(mixer, x, 37)
    torch.testing.assert_close(shifted, at_start)
    w_q, w_k, _ = mixer.qkv_proj.weight.chunk(3, dim=0)
    unrotated = (x @ w_q.T).view(1, 6, 2, 8).transpose(1, 2) @ (x @ w_k.T).view(1, 6, 2, 8).permute(0, 2, 3, 1)
    assert not torch.allclose(at_start, unrotated), "the rotation changes the scores"
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    for first_position in (0, 37):
        cache = mixer.allocate_cache(1)
        cache.seen = first_position  # an empty cache that says 37 tokens went before: positions start there
        with torch.no_grad():
            y = mixer(x, cache=cache) if first_position else mixer(x)
        scores = rotary_scores(mixer, x, first_position).masked_fill(~causal, float("-inf")) / math.sqrt(8)
        v = (x @ mixer.qkv_proj.weight.chunk(3, dim=0)[2].T).view(1, 6, 2, 8).transpose(1, 2)
        expected = mixer.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 6, 16))
        torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("bad, message", [
    ({"num_heads": 3}, "divisible"), ({"num_heads": 0}, "num_heads"), ({"window": 0}, "window"),
    ({"num_heads": 32}, "even head_dim"), ({"backend": "cuda"}, "not offered"),
])
def test_bad_arguments(bad, message):
    with pytest.raises(ValueError, match=message):
        Attention(32, **bad)


def test_flex_attention_sliding_window_matches_the_banded_mask():
    """The CUDA path (flex_attention with a block mask) computes the same as the masked reference; it compiles
    on CPU too, so the mask logic is checked here without a GPU."""
    from torch.nn import functional as F

    from zoo.blocks.attention import _flex_sliding_window
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 200, 16, generator=generator) for _ in range(3))
    positions = torch.arange(200)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(positions, positions, 48))
    torch.testing.assert_close(_flex_sliding_window(q, k, v, 48), expected, rtol=1e-5, atol=1e-5)

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


def test_rotary_makes_attention_position_aware():
    """With rotary positions, shifting the whole prompt by one token of padding changes the scores."""
    torch.manual_seed(0)
    with_rotary, without = Attention(16, num_heads=1), Attention(16, num_heads=1, rotary=False)
    without.load_state_dict(with_rotary.state_dict())
    x = torch.randn(1, 6, 16)
    assert not torch.allclose(with_rotary(x), without(x))


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

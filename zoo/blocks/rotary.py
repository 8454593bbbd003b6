"""Rotary position embedding (RoFormer): rotate channel pairs by position-dependent angles."""
import torch


def rotary_tables(positions: torch.Tensor, dim: int, base: float = 10000.0):
    """cos and sin of shape (len(positions), dim // 2), in float32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, seq, dim) with the two halves of the last dim forming the rotated pairs."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rotated.to(x.dtype)

"""Comparison helpers for kernel tests: one tolerance rule per dtype, used by every op's tests."""
import torch

# Relative RMS error allowed between a kernel and its fp32 reference, by the dtype of the kernel's inputs.
ERR_RATIO = {torch.float32: 2e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def err_ratio(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """RMS of the difference over RMS of the expected value (robust to a few large entries)."""
    a, e = actual.detach().double(), expected.detach().double()
    return ((a - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(1e-12)).item()


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0):
    """Assert ``actual`` matches ``expected`` within the tolerance for ``dtype`` (times ``scale``).

    Fails on shape mismatch, on any non-finite entry (unwritten NaN-filled buffers show up here), and on a
    relative RMS error above the dtype's bound.
    """
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values in the result"
    bound = ERR_RATIO[dtype] * scale
    ratio = err_ratio(actual, expected)
    max_abs = (actual.detach().double() - expected.detach().double()).abs().max().item()
    assert ratio <= bound, f"{name}: relative RMS error {ratio:.3g} > {bound:.3g} for {dtype} (max abs diff {max_abs:.3g})"

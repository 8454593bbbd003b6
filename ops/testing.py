"""Helpers for kernel tests: one tolerance rule per dtype, used by every op's tests, and packed-row inputs."""
import torch

# Relative RMS error allowed between a kernel and its fp32 reference, by the dtype of the kernel's inputs.
# float64: for paths that keep some state in float32 by design (Mamba's scan state, as in mamba-ssm), which
# agree to ~1e-7; a path that drops to float32 where it should not (or to 16 bits) is far outside it.
ERR_RATIO = {torch.float64: 1e-6, torch.float32: 2e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


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



# Largest error allowed at any one position, by the kernel's input dtype, as a fraction of RMS(expected) + |expected
# there|: relative where values are large (rounding is relative), absolute near zero. The RMS bound above averages
# over the whole tensor, so a wrong ragged tail or one unwritten tile of a large tensor can hide under it; a
# position wrong by its own size fails this bound unless it is tiny next to the tensor's RMS (bf16: the selective
# scan's worst positions measured ~0.006 in the interpreter at small shapes, so 5e-2 leaves ~8x room).
WORST_ERR = {torch.float64: 1e-6, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def assert_close_everywhere(name: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
                            scale: float = 1.0):
    """``assert_close`` and, at every position, |actual - expected| <= WORST_ERR[dtype] * scale * (RMS(expected)
    + |expected|); a failure names the worst position and both values there."""
    assert_close(name, actual, expected, dtype, scale)
    a, e = actual.detach().double(), expected.detach().double()
    rms = e.pow(2).mean().sqrt().clamp_min(1e-12)
    ratio = (a - e).abs() / (rms + e.abs())
    worst = ratio.argmax().item()
    bound = WORST_ERR[dtype] * scale
    if ratio.flatten()[worst].item() > bound:
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape))
        raise AssertionError(
            f"{name}: at {where} got {a.flatten()[worst].item():.6g}, expected {e.flatten()[worst].item():.6g}: "
            f"error {ratio.flatten()[worst].item():.3g} x (RMS + |expected|) > {bound:.3g} for {dtype}")


def packed_seq_idx(length: int, *rows_of_starts) -> torch.Tensor:
    """seq_idx (rows, length) whose row i starts a new document at each position in ``rows_of_starts[i]``."""
    seq_idx = torch.zeros(len(rows_of_starts), length, dtype=torch.long)
    for row, starts in enumerate(rows_of_starts):
        for start in starts:
            seq_idx[row, start:] += 1
    return seq_idx

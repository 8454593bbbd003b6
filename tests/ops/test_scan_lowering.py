"""``tl.associative_scan`` with each combine function and in each direction the kernels use, against a loop.

The interpreter runs a scan as a plain loop, so it cannot show a bug in the compiled lowering (Triton issue
4362: reverse scans with a non-commutative combine). On a GPU these tiny kernels compile the same scans at the
tile shapes and warp counts the kernels launch with, across lanes and across warps; on a CPU they check the
expected semantics in the interpreter.
"""
import pytest
import torch
import triton
import triton.language as tl

from ops.linear_recurrence.triton import _compose
from ops.testing import assert_close_everywhere


@triton.jit
def _scan_2d_kernel(A, X, OUT_A, OUT_X, ROWS: tl.constexpr, COLS: tl.constexpr, AXIS: tl.constexpr,
                    REVERSE: tl.constexpr):
    """A 2-D tile scanned along AXIS with ``_compose``: axis 0 is linear_recurrence's (time, channels) tile, axis 1
    a (states or channels, time) tile as the selective scan's chunk scans use."""
    offs = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
    a_cum, x_cum = tl.associative_scan((tl.load(A + offs), tl.load(X + offs)), AXIS, _compose, reverse=REVERSE)
    tl.store(OUT_A + offs, a_cum)
    tl.store(OUT_X + offs, x_cum)


@triton.jit
def _scan_3d_kernel(A, X, OUT_A, OUT_X, D0: tl.constexpr, L: tl.constexpr, N: tl.constexpr, REVERSE: tl.constexpr):
    """A (channels, time, states) tile scanned along axis 1, the layout of a tile-scanning selective scan."""
    offs = (tl.arange(0, D0)[:, None, None] * L * N + tl.arange(0, L)[None, :, None] * N
            + tl.arange(0, N)[None, None, :])
    a_cum, x_cum = tl.associative_scan((tl.load(A + offs), tl.load(X + offs)), 1, _compose, reverse=REVERSE)
    tl.store(OUT_A + offs, a_cum)
    tl.store(OUT_X + offs, x_cum)


def loop_scan(a, x, dim, reverse):
    """h_t = a_t h_{t-1} + x_t and the running product of a, step by step in float64 (the reverse scan walks
    from the last step to the first)."""
    a, x = a.double().movedim(dim, 0), x.double().movedim(dim, 0)
    order = range(a.shape[0] - 1, -1, -1) if reverse else range(a.shape[0])
    out_a, out_x = torch.empty_like(a), torch.empty_like(x)
    prod, h = torch.ones_like(a[0]), torch.zeros_like(x[0])
    for t in order:
        prod, h = prod * a[t], a[t] * h + x[t]
        out_a[t], out_x[t] = prod, h
    return out_a.movedim(0, dim), out_x.movedim(0, dim)


def inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 0.5 + 0.5, torch.randn(shape, generator=g)


# (tile shape, scanned axis, warps): the linear-recurrence configs' (time x channels) tiles along axis 0, and
# (states x time) tiles along axis 1; one and several warps
TILES_2D = [((32, 32), 0, 1), ((64, 16), 0, 2), ((128, 16), 0, 4), ((32, 128), 0, 4), ((16, 64), 1, 4),
            ((16, 128), 1, 8)]
TILES_3D = [((4, 64, 16), 4), ((8, 32, 16), 8)]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("tile, axis, warps", TILES_2D, ids=lambda v: str(v))
def test_scan_along_time_of_a_2d_tile(tile, axis, warps, reverse, triton_device):
    a, x = inputs(tile, seed=sum(tile))
    out_a, out_x = torch.empty(tile, device=triton_device), torch.empty(tile, device=triton_device)
    _scan_2d_kernel[(1,)](a.to(triton_device), x.to(triton_device), out_a, out_x, *tile, axis, reverse,
                          num_warps=warps)
    want_a, want_x = loop_scan(a, x, axis, reverse)
    assert_close_everywhere("decay product", out_a.cpu(), want_a, torch.float32)
    assert_close_everywhere("state", out_x.cpu(), want_x, torch.float32)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("tile, warps", TILES_3D, ids=lambda v: str(v))
def test_scan_along_time_of_a_3d_tile(tile, warps, reverse, triton_device):
    a, x = inputs(tile, seed=sum(tile))
    out_a, out_x = torch.empty(tile, device=triton_device), torch.empty(tile, device=triton_device)
    _scan_3d_kernel[(1,)](a.to(triton_device), x.to(triton_device), out_a, out_x, *tile, reverse, num_warps=warps)
    want_a, want_x = loop_scan(a, x, 1, reverse)
    assert_close_everywhere("decay product", out_a.cpu(), want_a, torch.float32)
    assert_close_everywhere("state", out_x.cpu(), want_x, torch.float32)

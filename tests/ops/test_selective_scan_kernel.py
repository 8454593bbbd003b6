"""The chunked Triton selective scan against the reference, at the edges of its chunk and channel-block structure.

Tiny tiles (4 channels x 8 steps) make tiny inputs span several chunks and channel blocks, so the state carried
between chunks (through the checkpoint slots), the adjoint carried back between chunks, and the channels a
block does not own are all exercised in the interpreter. Every fresh output starts as NaN. On a GPU the kernels run
compiled (``triton_device``), at the same tiles. Packed documents (seq_idx) restart inside both kernels: at chunk
and lane edges, one-step documents, a document starting at the last step.
"""
import pytest
import torch

from ops.selective_scan import selective_scan
from ops.selective_scan.reference import selective_scan as reference_scan
from ops.testing import assert_close, packed_seq_idx

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@pytest.fixture(autouse=True)
def small_nan_filled_tiles(monkeypatch):
    from ops.selective_scan import triton as kernel
    monkeypatch.setattr(kernel, "_TEST_TILES", (4, 8))
    monkeypatch.setattr(kernel, "FILL_FRESH_BUFFERS_WITH_NAN", True)


@pytest.fixture(autouse=True)
def device(triton_device):
    return triton_device


def _inputs(batch, dim, length, n_state, groups=None, with_h0=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    inputs = dict(u=torch.randn(batch, dim, length, generator=g),
                  delta=torch.randn(batch, dim, length, generator=g) * 0.5,
                  A=-(torch.rand(dim, n_state, generator=g) * 2 + 0.1),
                  B=torch.randn(*bc, generator=g), C=torch.randn(*bc, generator=g),
                  D=torch.randn(dim, generator=g), z=torch.randn(batch, dim, length, generator=g),
                  delta_bias=torch.randn(dim, generator=g) * 0.5,
                  initial_state=torch.randn(batch, dim, n_state, generator=g) if with_h0 else None)
    return {k: (v.requires_grad_(True) if v is not None else None) for k, v in inputs.items()}


def _compare(inputs, device, loss_on=("out", "last"), seq_idx=None):
    """The kernel on ``device`` against the reference on the CPU: out, last state and every input gradient."""
    mine = {k: (v.detach().to(device).requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    out, last = selective_scan(**mine, delta_softplus=True, return_last_state=True, backend="triton",
                               seq_idx=None if seq_idx is None else seq_idx.to(device))
    want, want_last = reference_scan(**inputs, delta_softplus=True, return_last_state=True, seq_idx=seq_idx)
    assert_close("out", out.cpu(), want, torch.float32)
    assert_close("last state", last.cpu(), want_last, torch.float32)
    g = torch.Generator().manual_seed(5)
    weights = {"out": torch.randn(out.shape, generator=g), "last": torch.randn(last.shape, generator=g)}
    for got, on in ((dict(out=out, last=last), device), (dict(out=want, last=want_last), "cpu")):
        sum((got[k] * weights[k].to(on)).sum() for k in loss_on).backward()
    for name in NAMES:
        if inputs[name] is None:
            continue
        want_grad = inputs[name].grad
        if want_grad is None:  # no path from this input to the loss (z and D do not reach the last state)
            assert mine[name].grad is None or not mine[name].grad.any(), f"grad {name}: nonzero, expected none"
            continue
        assert_close(f"grad {name}", mine[name].grad.cpu(), want_grad, torch.float32)


def test_whole_chunks_and_blocks_that_straddle_groups(device):
    # L 24: three whole chunks; dim 6 in 3 groups of 2: each 4-channel block spans two groups, the second is ragged
    _compare(_inputs(2, 6, 24, 3, groups=3), device)


def test_one_step_and_no_initial_state(device):
    _compare(_inputs(1, 5, 1, 2, with_h0=False, seed=1), device)


def test_gradient_through_the_last_state_alone(device):
    """Only the last state is used: the adjoint starts from its gradient and crosses every chunk boundary."""
    _compare(_inputs(1, 4, 19, 2, seed=2), device, loss_on=("last",))


@pytest.mark.parametrize("groups", [None, 3])
def test_packed_documents_restart_inside_the_kernels(device, groups):
    """Row 0: documents from steps 1 (one step after the initial state's), 8 and 16 (chunk edges), 9 and 10
    (one-step documents), 23 (the last step); row 1: one document. The initial state reaches each row's first
    document only; no gradient crosses a boundary."""
    _compare(_inputs(2, 6, 24, 3, groups=groups, seed=6), device, seq_idx=packed_seq_idx(24, [1, 8, 9, 10, 16, 23], []))


def test_packed_gradient_through_the_last_state_alone(device):
    """The adjoint from the last state stops at the last document's start (steps 5 and 12, inside chunks)."""
    _compare(_inputs(1, 4, 19, 2, seed=7), device, loss_on=("last",), seq_idx=packed_seq_idx(19, [5, 12]))


@pytest.mark.parametrize("tiles, length, groups", [
    ((1, 16), 37, None),   # backward tile 4 rows x 4 lanes; L ragged in the last chunk and within a lane
    ((1, 64), 150, 2),     # 2 rows x 32 lanes (a whole warp of lanes), grouped B/C, ragged last chunk
    ((1, 64), 128, None),  # whole chunks only
])
def test_one_channel_per_program_as_launched(monkeypatch, device, tiles, length, groups):
    """One channel per program, as the kernels launch on a GPU: the backward's unmasked dB/dC atomics into the
    chunk-padded buffers, and its two-level scans (within a lane's rows, then across lanes)."""
    from ops.selective_scan import triton as kernel
    monkeypatch.setattr(kernel, "_TEST_TILES", tiles)
    _compare(_inputs(2, 4 if groups else 3, length, 3, groups=groups, seed=3), device)
    if groups:  # packed (in one case, for time): at a lane's first row, inside a lane, at the next chunk's first step
        starts = [4, 7, tiles[1], length - 1]
        _compare(_inputs(2, 4, length, 3, groups=groups, seed=8), device, seq_idx=packed_seq_idx(length, starts, [7]))


def test_launch_chunk_of_512_with_a_boundary_at_exactly_512(monkeypatch, device):
    """The launch tiles themselves (512 steps: 16 rows x 32 lanes in the backward): chunk boundaries at 512 and
    1024, then a ragged chunk; the adjoint starts from the last state's gradient only."""
    from ops.selective_scan import triton as kernel
    monkeypatch.setattr(kernel, "_TEST_TILES", (kernel.BWD_BLOCK_D, kernel.BLOCK_L))
    _compare(_inputs(1, 2, 2 * kernel.BLOCK_L + 3, 2, seed=4), device)
    _compare(_inputs(1, 2, kernel.BLOCK_L, 2, with_h0=False, seed=5), device, loss_on=("last",))
    # packed: a document from step 512 (the second chunk's first, the chunk-last step's a_{t+1} = 0), one from 520
    _compare(_inputs(1, 2, 2 * kernel.BLOCK_L + 3, 2, seed=9), device,
             seq_idx=packed_seq_idx(2 * kernel.BLOCK_L + 3, [kernel.BLOCK_L, kernel.BLOCK_L + 8]))

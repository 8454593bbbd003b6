"""Selective scan: the chunked reference against a plain per-step loop, and the Triton kernel (forward and
every input gradient) against the reference. Tiny ragged shapes: the Triton kernel runs in the interpreter on CPU."""
import pytest
import torch
import torch.nn.functional as F

from ops.selective_scan import selective_scan
from ops.selective_scan.reference import selective_scan as reference_scan
from ops.testing import assert_close

INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def sequential_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """The definition written as one step per timestep, in float64 (the slow, obvious version)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 4:
        B = B.repeat_interleave(dim // B.shape[1], dim=1)        # (b, d, N, L)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    h = initial_state.double() if initial_state is not None else u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        B_t = B if B.dim() == 2 else (B[:, None, :, t] if B.dim() == 3 else B[..., t])
        C_t = C if C.dim() == 2 else (C[:, None, :, t] if C.dim() == 3 else C[..., t])
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make_inputs(batch, dim, length, n_state, bc="variable", groups=2, dtype=torch.float32, with_d=True,
                with_z=True, with_bias=True, with_h0=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    bc_shape = {"invariant": (dim, n_state), "variable": (batch, n_state, length),
                "grouped": (batch, groups, n_state, length)}[bc]
    inputs = {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5),
        # S4D-real-like decays with some spread: A = -(1..N) scaled
        "A": -(torch.rand(dim, n_state, generator=g) * 2 + 0.1),
        "B": rand(*bc_shape),
        "C": rand(*bc_shape),
        "D": torch.randn(dim, generator=g) if with_d else None,
        "z": rand(batch, dim, length) if with_z else None,
        "delta_bias": torch.randn(dim, generator=g) * 0.5 if with_bias else None,
        "initial_state": torch.randn(batch, dim, n_state, generator=g) if with_h0 else None,
    }
    return inputs


def leaves(inputs, dtype=None):
    """Fresh leaf copies that require grad (optionally cast): one set per implementation compared."""
    out = {}
    for name, t in inputs.items():
        if t is None:
            out[name] = None
            continue
        t = t.detach().clone()
        if dtype is not None and name in ("u", "delta", "z", "B", "C"):
            t = t.to(dtype)
        out[name] = t.requires_grad_(True)
    return out


@pytest.mark.parametrize("bc", ["invariant", "variable", "grouped"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_reference_matches_sequential_loop(bc, with_h0):
    # a single step; odd lengths at several levels of the pairwise scan; a power of 2 (softplus only there: a
    # negative delta makes decays above 1, and 64 of them overflow float32)
    for length, softplus in ((1, False), (1, True), (37, False), (37, True), (64, True)):
        inputs = make_inputs(2, 6, length, 5, bc=bc, with_h0=with_h0)
        expected, expected_last = sequential_scan(**inputs, delta_softplus=softplus)
        out, last = reference_scan(**inputs, delta_softplus=softplus, return_last_state=True)
        assert_close(f"out {bc} L={length} softplus={softplus}", out, expected, torch.float32)
        assert_close(f"last state {bc} L={length} softplus={softplus}", last, expected_last, torch.float32)


def test_reference_empty_sequence_keeps_the_state():
    inputs = make_inputs(1, 3, 0, 2, with_h0=True)
    out, last = reference_scan(**inputs, return_last_state=True)
    assert out.shape == (1, 3, 0)
    torch.testing.assert_close(last, inputs["initial_state"])


@pytest.mark.parametrize("bc", ["invariant", "variable", "grouped"])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("length", [1, 19, 32])
def test_reference_gradients_match_sequential_loop(bc, with_h0, length):
    """The custom backward of the reference scan against autograd through the float64 loop: every input,
    including initial_state, with the loss reading both the outputs and the last state."""
    inputs = make_inputs(2, 4, length, 3, bc=bc, with_h0=with_h0)
    mine, theirs = leaves(inputs), leaves(inputs)
    out, last = reference_scan(**mine, delta_softplus=True, return_last_state=True)
    expected, expected_last = sequential_scan(**theirs, delta_softplus=True)
    g = torch.Generator().manual_seed(1)
    w_out, w_last = torch.randn(out.shape, generator=g), torch.randn(last.shape, generator=g)
    ((out * w_out).sum() + (last * w_last).sum()).backward()
    ((expected * w_out).sum() + (expected_last * w_last).sum()).backward()
    for name in INPUT_NAMES:
        if inputs[name] is None:
            continue
        assert mine[name].grad is not None, f"no gradient for {name}"
        assert_close(f"grad {name} {bc} L={length}", mine[name].grad, theirs[name].grad.float(), torch.float32)


def test_reference_gradients_of_the_last_state_alone():
    """Only the last state in the loss: the gradient enters the backward scan at the final step only."""
    inputs = make_inputs(1, 3, 23, 4, bc="grouped", groups=3, with_h0=True)
    mine, theirs = leaves(inputs), leaves(inputs)
    _, last = reference_scan(**mine, return_last_state=True)
    _, expected_last = sequential_scan(**theirs)
    w_last = torch.randn(last.shape, generator=torch.Generator().manual_seed(4))
    (last * w_last).sum().backward()
    (expected_last * w_last).sum().backward()
    for name in ("u", "delta", "A", "B", "delta_bias", "initial_state"):
        assert_close(f"grad {name}", mine[name].grad, theirs[name].grad.float(), torch.float32)


def test_reference_backward_survives_in_place_update_of_the_initial_state():
    """A cache updated in place after the call (as in decoding with prefill) must not change the gradients."""
    inputs = make_inputs(1, 2, 9, 3, with_h0=True)
    expected = leaves(inputs)
    reference_scan(**expected).sum().backward()
    mine = leaves(inputs)
    state = mine["initial_state"] * 1.0            # a non-leaf standing in for the cache tensor
    out, last = reference_scan(**{**mine, "initial_state": state}, return_last_state=True)
    state.copy_(last.detach())
    out.sum().backward()
    for name in ("u", "delta", "A", "initial_state"):
        torch.testing.assert_close(mine[name].grad, expected[name].grad)


def test_public_name_in_ops_dispatches():
    import ops
    inputs = make_inputs(1, 3, 6, 2)
    torch.testing.assert_close(ops.selective_scan(**inputs, backend="reference"), reference_scan(**inputs))


def test_complex_A_is_rejected():
    inputs = make_inputs(1, 2, 4, 2)
    inputs["A"] = inputs["A"].to(torch.complex64)
    with pytest.raises(ValueError, match="complex"):
        selective_scan(**inputs, backend="reference")


def _compare_triton(inputs, dtype, softplus, device, scale=1.0):
    """Triton on `device` with `dtype` inputs vs the fp32 reference on the CPU on the same rounded inputs: out,
    last state, all grads."""
    mine = {k: (v.detach().to(device).requires_grad_(True) if v is not None else None)
            for k, v in leaves(inputs, dtype).items()}
    ref = {k: (v.detach().cpu().float().requires_grad_(True) if v is not None else None) for k, v in mine.items()}
    out, last = selective_scan(**mine, delta_softplus=softplus, return_last_state=True, backend="triton")
    expected, expected_last = reference_scan(**ref, delta_softplus=softplus, return_last_state=True)
    assert out.dtype == dtype and last.dtype == torch.float32
    assert_close("out", out.float().cpu(), expected, dtype, scale)
    assert_close("last state", last.cpu(), expected_last, dtype, scale)
    g = torch.Generator().manual_seed(2)
    w_out = torch.randn(out.shape, generator=g)
    w_last = torch.randn(last.shape, generator=g)
    ((out.float() * w_out.to(device)).sum() + (last * w_last.to(device)).sum()).backward()
    ((expected * w_out).sum() + (expected_last * w_last).sum()).backward()
    for name in INPUT_NAMES:
        if mine[name] is None:
            continue
        assert mine[name].grad is not None, f"no gradient for {name}"
        assert mine[name].grad.dtype == mine[name].dtype, f"grad {name} dtype"
        assert_close(f"grad {name}", mine[name].grad.float().cpu(), ref[name].grad, dtype, scale)


def _on(inputs, device):
    return {k: (v.to(device) if v is not None else None) for k, v in inputs.items()}


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch):
    """Every fresh kernel output starts as NaN, so an entry the kernel forgets to write fails assert_close."""
    from ops.selective_scan import triton as kernel
    monkeypatch.setattr(kernel, "FILL_FRESH_BUFFERS_WITH_NAN", True)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 4 channels x 8 steps, so tiny inputs still span several ragged chunks and channel blocks."""
    from ops.selective_scan import triton as kernel
    monkeypatch.setattr(kernel, "_TEST_TILES", (4, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bc", ["variable", "grouped"])
def test_triton_matches_reference(dtype, bc, small_tiles, triton_device):
    # L 21: three chunks of 8, the last ragged; dim 6: a ragged channel block; N 5: a padded state width
    inputs = make_inputs(2, 6, 21, 5, bc=bc, with_h0=True)
    _compare_triton(inputs, dtype, softplus=True, device=triton_device)


@pytest.mark.parametrize("options", [
    dict(with_d=False, with_z=False, with_bias=False, with_h0=False, softplus=False),
    dict(with_d=True, with_z=False, with_bias=True, with_h0=False, softplus=False),
    dict(with_d=False, with_z=True, with_bias=False, with_h0=True, softplus=True),
])
def test_triton_optional_inputs(options, triton_device):
    options = dict(options)
    softplus = options.pop("softplus")
    inputs = make_inputs(1, 6, 33, 16, **options, seed=3)  # default tiles: 33 steps = two chunks
    _compare_triton(inputs, torch.float32, softplus=softplus, device=triton_device)


def test_triton_forward_only_and_plain_output(triton_device):
    inputs = make_inputs(1, 3, 9, 4)
    with torch.no_grad():
        out = selective_scan(**_on(inputs, triton_device), delta_softplus=True, backend="triton")
    expected = reference_scan(**inputs, delta_softplus=True)
    assert isinstance(out, torch.Tensor)
    assert_close("out (no grad)", out.cpu(), expected, torch.float32)


def test_time_invariant_bc_falls_back_to_reference_under_triton(triton_device):
    inputs = make_inputs(1, 4, 10, 3, bc="invariant")
    out = selective_scan(**_on(inputs, triton_device), backend="triton")
    expected, _ = sequential_scan(**inputs)
    assert_close("out", out.cpu(), expected, torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mamba_ssm parity needs CUDA")
def test_cuda_backend_matches_reference():
    pytest.importorskip("mamba_ssm", reason="mamba_ssm is not installed")
    inputs = {k: (v.cuda() if v is not None else None) for k, v in make_inputs(2, 64, 300, 16).items()}
    inputs["initial_state"] = None
    out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="cuda")
    expected, expected_last = reference_scan(**inputs, delta_softplus=True, return_last_state=True)
    assert_close("out", out, expected, torch.float32, scale=5)
    assert_close("last state", last, expected_last, torch.float32, scale=5)

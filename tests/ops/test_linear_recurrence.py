"""linear_recurrence / log_linear_recurrence: reference vs a sequential loop, log form vs linear form, and the
fused Triton kernel vs the reference on h, final state and every input gradient (interpreter on CPU)."""
import pytest
import torch
import torch.nn.functional as F

import ops
from ops._backend import triton_importable
from ops.linear_recurrence.reference import linear_recurrence_reference, log_linear_recurrence_reference
from ops.testing import assert_close

# (batch, T, D): single step, ragged T and D below one tile, T over several tiles with a ragged tail and
# D over several ragged column tiles (the interpreter config tiles T by 32 and D by 16)
SHAPES = [(2, 1, 3), (2, 23, 5), (1, 70, 19)]


def sequential_loop(coeffs, values, initial_state=None):
    """The definition, one step at a time in float64: h_t = coeffs_t * h_{t-1} + values_t."""
    batch, length, width = values.shape
    h = torch.zeros(batch, width, dtype=torch.float64) if initial_state is None else initial_state.double()
    out = []
    for t in range(length):
        h = coeffs[:, t].double() * h + values[:, t].double()
        out.append(h)
    return torch.stack(out, dim=1), h


def make_inputs(shape, form, dtype, with_initial_state, seed=0):
    """Random inputs rounded to ``dtype``; log-decays in (-inf, 0) as sigmoid gates give them."""
    gen = torch.Generator().manual_seed(seed)
    batch, length, width = shape
    decays = F.logsigmoid(2 * torch.randn(shape, generator=gen) + 1)
    values = torch.randn(shape, generator=gen)
    if form == "log":
        values = F.logsigmoid(values) + torch.randn(shape, generator=gen)  # log of positive values
    h0 = torch.randn(batch, width, generator=gen) if with_initial_state else None
    cast = lambda t: None if t is None else t.to(dtype)
    return cast(values), cast(decays), cast(h0)


def call(form, backend, values, decays, h0):
    if form == "linear":
        return ops.linear_recurrence(values, decays, h0, output_final_state=True, backend=backend)
    return ops.log_linear_recurrence(decays, values, h0, output_final_state=True, backend=backend)


def outputs_and_grads(form, backend, values, decays, h0, seed=1):
    leaves = [t.detach().clone().requires_grad_() for t in (values, decays) + ((h0,) if h0 is not None else ())]
    h, final = call(form, backend, *leaves[:2], leaves[2] if h0 is not None else None)
    gen = torch.Generator().manual_seed(seed)
    loss = (h.float() * torch.randn(h.shape, generator=gen)).sum() + (final * torch.randn(final.shape, generator=gen)).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)  # g_0 is unused when T=1, h0=0
    return [h, final, *grads]


@pytest.mark.parametrize("with_initial_state", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_sequential_loop(shape, with_initial_state):
    values, decays, h0 = make_inputs(shape, "linear", torch.float32, with_initial_state)
    expected_h, expected_final = sequential_loop(decays.exp(), values, h0)
    h, final = linear_recurrence_reference(values, decays, h0, output_final_state=True)
    assert_close("h", h, expected_h, torch.float32)
    assert_close("final_state", final, expected_final, torch.float32)

    log_values, _, _ = make_inputs(shape, "log", torch.float32, False)
    expected_h, expected_final = sequential_loop(decays.exp(), log_values.exp(), h0)
    h, final = log_linear_recurrence_reference(decays, log_values, h0, output_final_state=True)
    assert_close("log-form h", h, expected_h, torch.float32)
    assert_close("log-form final_state", final, expected_final, torch.float32)


@pytest.mark.parametrize("with_initial_state", [False, True])
def test_log_form_equals_linear_form_with_gradients(with_initial_state):
    log_values, decays, h0 = make_inputs((2, 45, 6), "log", torch.float64, with_initial_state)
    via_log = outputs_and_grads("log", "reference", log_values, decays, h0)
    # linear form fed exp(log_values); chain rule gives d/dlog_values = d/dx * exp(log_values)
    via_linear = outputs_and_grads("linear", "reference", log_values.exp(), decays, h0)
    via_linear[2] = via_linear[2] * log_values.exp()
    for name, a, e in zip(["h", "final_state", "d log_values", "d log_coeffs", "d initial_state"], via_log, via_linear):
        assert_close(name, a, e, torch.float32)


def test_final_state_chains_into_initial_state():
    values, decays, _ = make_inputs((2, 40, 7), "linear", torch.float32, False)
    whole, whole_final = ops.linear_recurrence(values, decays, output_final_state=True)
    first, mid = ops.linear_recurrence(values[:, :17], decays[:, :17], output_final_state=True)
    second, final = ops.linear_recurrence(values[:, 17:], decays[:, 17:], mid, output_final_state=True)
    assert_close("h split at 17", torch.cat([first, second], 1), whole, torch.float32)
    assert_close("final_state split at 17", final, whole_final, torch.float32)


def test_bad_shapes_and_backends_raise():
    x = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="must both be"):
        ops.linear_recurrence(x, torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="initial_state"):
        ops.log_linear_recurrence(x, x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="backend"):
        ops.linear_recurrence(x, x, backend="fast")
    assert ops.linear_recurrence(x, x)[1] is None  # no final state unless asked


needs_triton = pytest.mark.skipif(not triton_importable(), reason="triton is not installed")


@needs_triton
@pytest.mark.parametrize("with_initial_state", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("form", ["linear", "log"])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_matches_reference(shape, form, dtype, with_initial_state, monkeypatch, triton_device):
    from ops.linear_recurrence import triton as kernel
    monkeypatch.setattr(kernel, "_new_buffer", lambda like, *shape, dtype=None: torch.full(
        shape or like.shape, float("nan"), dtype=dtype or like.dtype, device=like.device))
    values, decays, h0 = make_inputs(shape, form, dtype, with_initial_state)
    got = outputs_and_grads(form, "triton", *(None if t is None else t.to(triton_device) for t in (values, decays, h0)))
    # fp32 reference on the same (dtype-rounded) inputs
    expected = outputs_and_grads(form, "reference", *(None if t is None else t.float() for t in (values, decays, h0)))
    names = ["h", "final_state", "d values", "d decays", "d initial_state"]
    for name, actual, want in zip(names, got, expected):
        assert actual.dtype == (torch.float32 if name == "final_state" else dtype), name
        assert_close(f"{form} {name}", actual.float().cpu(), want, dtype)


@needs_triton
def test_triton_gradients_without_final_state_output(triton_device):
    values, decays, h0 = make_inputs((1, 40, 20), "linear", torch.float32, True)
    results = []
    for backend, device in (("triton", triton_device), ("reference", "cpu")):
        leaves = [t.clone().to(device).requires_grad_() for t in (values, decays, h0)]
        h, final = ops.linear_recurrence(*leaves, backend=backend)
        assert final is None
        results.append([h, *torch.autograd.grad(h.pow(2).sum(), leaves)])
    for name, actual, want in zip(["h", "dx", "dg", "dh0"], *results):
        assert_close(name, actual.cpu(), want.cpu(), torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla parity needs CUDA")
def test_same_semantics_as_fla_chunk_hgrn():
    hgrn = pytest.importorskip("fla.ops.hgrn", reason="fla (flash-linear-attention) is not installed")
    values, decays, h0 = (t.cuda() for t in make_inputs((2, 300, 96), "linear", torch.float32, True))
    ours = outputs_and_grads("linear", "triton", values, decays, h0)
    leaves = [t.clone().requires_grad_() for t in (values, decays, h0)]
    h, final = hgrn.chunk_hgrn(*leaves, output_final_state=True)
    gen = torch.Generator().manual_seed(1)
    loss = (h.float() * torch.randn(h.shape, generator=gen).cuda()).sum() + \
        (final.float() * torch.randn(final.shape, generator=gen).cuda()).sum()
    theirs = [h, final, *torch.autograd.grad(loss, leaves)]
    for name, actual, want in zip(["h", "final_state", "dx", "dg", "dh0"], ours, theirs):
        assert_close(f"vs fla {name}", actual, want.float(), torch.float32, scale=10)


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_log_form_with_extreme_gates_stays_finite(backend, request):
    """Saturated gates (log-coefficients from about -600 to exactly 0) and values spanning e^-495 .. e^5 over 160 steps."""
    device = request.getfixturevalue("triton_device") if backend == "triton" else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    log_coeffs = -F.softplus(200 * torch.randn(2, 160, 3, generator=gen))
    log_coeffs[:, ::7] = 0.0  # a gate that keeps everything
    log_values = 250 * torch.rand(2, 160, 3, generator=gen) - 245 - 250 * (torch.rand(2, 160, 3, generator=gen) > 0.5)
    h0 = torch.rand(2, 3, generator=gen)
    got = outputs_and_grads("log", backend, *(t.to(device) for t in (log_values, log_coeffs, h0)))
    expected_h, expected_final = sequential_loop(log_coeffs.exp(), log_values.exp(), h0)
    for name, tensor in zip(["h", "final_state", "d log_values", "d log_coeffs", "d initial_state"], got):
        assert torch.isfinite(tensor).all(), f"{backend}: non-finite {name}"
    assert_close(f"{backend} h", got[0].cpu(), expected_h, torch.float32)
    assert_close(f"{backend} final_state", got[1].cpu(), expected_final, torch.float32)
    if backend == "triton":
        reference = outputs_and_grads("log", "reference", log_values, log_coeffs, h0)
        for name, actual, want in zip(["d log_values", "d log_coeffs", "d initial_state"], got[2:], reference[2:]):
            assert_close(f"triton {name}", actual.cpu(), want, torch.float32)

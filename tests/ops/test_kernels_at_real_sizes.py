"""Every fused kernel against its reference at training sizes, compiled on a GPU (the CPU runs skip this file).

The interpreter tests check the logic at tiny shapes; these check what only real tiles and real compilation
show (multi-tile carries, 32-bit offsets, autotuned configs, ragged last tiles at the launched tile sizes), in
bf16 as the kernels are used. Every fresh output and gradient buffer a kernel allocates starts as NaN, and each
result is compared at its worst position as well as in RMS, so one unwritten or wrong tile cannot hide.
"""
import pytest
import torch
import torch.nn.functional as F

import ops
from ops.testing import assert_close_everywhere

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="real-size kernel checks need a CUDA GPU")
DTYPE = torch.bfloat16
LONG = 16384  # the longest training length the GPU benchmarks use


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch):
    from ops.based import triton as based
    from ops.linear_recurrence import triton as linear_recurrence
    from ops.selective_scan import triton as selective_scan
    monkeypatch.setattr(based, "FILL_FRESH_BUFFERS_WITH_NAN", True)
    monkeypatch.setattr(linear_recurrence, "FILL_FRESH_BUFFERS_WITH_NAN", True)
    monkeypatch.setattr(selective_scan, "FILL_FRESH_BUFFERS_WITH_NAN", True)


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def compare(name, run, inputs, scale=1.0):
    """run(backend, *inputs) -> tensor or tuple; outputs and every input gradient of the Triton kernel against the
    reference (fp32 inside) on the same bf16-rounded inputs, at every position. Both run on the GPU."""
    results = {}
    for backend in ("reference", "triton"):
        xs = leaves(*inputs)
        out = run(backend, *xs)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
        grads_out = [torch.randn(o.shape, device=o.device, generator=torch.Generator(o.device).manual_seed(i)).to(o.dtype)
                     for i, o in enumerate(outs)]
        torch.autograd.backward(outs, grads_out)
        results[backend] = ([o.detach().float() for o in outs], [None if x is None else x.grad.float() for x in xs])
    (ref_outs, ref_grads), (outs, grads) = results["reference"], results["triton"]
    for i, (o, r) in enumerate(zip(outs, ref_outs, strict=True)):
        assert_close_everywhere(f"{name} output {i}", o, r, DTYPE, scale)
    for i, (g, r) in enumerate(zip(grads, ref_grads, strict=True)):
        if r is not None:
            assert g is not None, f"{name}: no gradient for input {i}"
            assert_close_everywhere(f"{name} grad of input {i}", g, r, DTYPE, scale)


# ---------------------------------------------------------------- selective scan
# (batch, channels, length, states, B/C groups or 0 for (batch, N, L), initial state)
SCAN_CASES = {
    "B2-D384-L2048-N16": (2, 384, 2048, 16, 0, False),
    "ragged-D200-L3001-N64": (1, 200, 3001, 64, 0, False),     # a ragged channel block and a ragged last chunk
    "grouped4-D384-L1024-N16": (2, 384, 1024, 16, 4, False),
    "initial-state-D256-L1500-N16": (2, 256, 1500, 16, 0, True),
    "long-D256-L16k-N16": (1, 256, LONG, 16, 0, True),
}


def scan_inputs(batch, dim, length, state, groups, with_h0, device="cuda", seed=0):
    g = torch.Generator(device).manual_seed(seed)
    randn = lambda *s: torch.randn(*s, device=device, generator=g)  # noqa: E731
    u, z = randn(batch, dim, length).to(DTYPE), randn(batch, dim, length).to(DTYPE)
    delta = (randn(batch, dim, length) * 0.5 - 4).to(DTYPE)
    A = -torch.rand(dim, state, device=device, generator=g) * 4 - 0.5
    bc = (batch, groups, state, length) if groups else (batch, state, length)
    B, C = randn(*bc).to(DTYPE), randn(*bc).to(DTYPE)
    D, bias = randn(dim), randn(dim) * 0.1
    h0 = randn(batch, dim, state) if with_h0 else None
    return u, delta, A, B, C, D, z, bias, h0


def run_scan(backend, u, delta, A, B, C, D, z, bias, h0):
    return ops.selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True,
                              initial_state=h0, backend=backend)


@pytest.mark.parametrize("case", SCAN_CASES)
def test_selective_scan(case):
    batch, dim, length, state, groups, with_h0 = SCAN_CASES[case]
    inputs = scan_inputs(batch, dim, length, state, groups, with_h0)
    compare(f"selective_scan {case}", run_scan, inputs, scale=2.0 if length >= LONG else 1.0)


def test_selective_scan_packed_documents():
    """seq_idx at a real size: ~40 documents per 4096-step row (some at 512-step chunk edges), an initial state,
    the last state; the kernels restart in place, the reference zeroes the decay into each document."""
    inputs = scan_inputs(2, 256, 4096, 16, 0, True)
    g = torch.Generator().manual_seed(1)
    starts = torch.rand(2, 4096, generator=g) < 1 / 100
    starts[:, [512, 1024, 1025, 4095]] = True
    seq_idx = starts.long().cumsum(1).cuda()

    def run(backend, *xs):
        u, delta, A, B, C, D, z, bias, h0 = xs
        return ops.selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True,
                                  initial_state=h0, backend=backend, seq_idx=seq_idx)
    compare("selective_scan packed", run, inputs)


# ---------------------------------------------------------------- linear recurrence, both forms
LR_CASES = {"B4-T2048-D1536": (4, 2048, 1536), "ragged-B3-T1999-D700": (3, 1999, 700), "long-B2-T16k-D512": (2, LONG, 512)}


def recurrence_inputs(batch, length, width, form, device="cuda", seed=0):
    g = torch.Generator(device).manual_seed(seed)
    decay = F.logsigmoid(torch.randn(batch, length, width, device=device, generator=g) + 3)
    x = torch.randn(batch, length, width, device=device, generator=g)
    if form == "log":  # minGRU's log-values: log of positive candidates
        x = F.logsigmoid(x) + 0.5 * torch.randn(batch, length, width, device=device, generator=g)
    h0 = torch.randn(batch, width, device=device, generator=g)
    return x.to(DTYPE), decay.to(DTYPE), h0


def run_linear(backend, x, decay, h0):
    return ops.linear_recurrence(x, decay, h0, output_final_state=True, backend=backend)


def run_log(backend, log_values, log_coeffs, h0):
    return ops.log_linear_recurrence(log_coeffs, log_values, h0, output_final_state=True, backend=backend)


@pytest.mark.parametrize("form", ["linear", "log"])
@pytest.mark.parametrize("case", LR_CASES)
def test_linear_recurrence(case, form):
    batch, length, width = LR_CASES[case]
    inputs = recurrence_inputs(batch, length, width, form)
    compare(f"{form} recurrence {case}", run_linear if form == "linear" else run_log, inputs,
            scale=2.0 if length >= LONG else 1.0)


# ---------------------------------------------------------------- BASED
BASED_CASES = {"B2-T2048-H12": (2, 2048, 12, True), "ragged-B1-T1000-H3": (1, 1000, 3, True),
               "no-norm-B2-T2048-H12": (2, 2048, 12, False), "long-B1-T16k-H4": (1, LONG, 4, True)}


def based_inputs(batch, length, heads, device="cuda", seed=0):
    g = torch.Generator(device).manual_seed(seed)
    q = torch.randn(batch, length, heads, 16, device=device, generator=g).to(DTYPE)
    k = torch.randn(batch, length, heads, 16, device=device, generator=g).to(DTYPE)
    v = torch.randn(batch, length, heads, 64, device=device, generator=g).to(DTYPE)
    return q, k, v


@pytest.mark.parametrize("case", BASED_CASES)
def test_based_attention(case):
    batch, length, heads, use_norm = BASED_CASES[case]

    def run(backend, q, k, v):
        return ops.based_attention(q, k, v, use_norm=use_norm, backend=backend)
    compare(f"based_attention {case}", run, based_inputs(batch, length, heads), scale=2.0 if length >= LONG else 1.0)


# (batch, T, C, k): the co4 speed preset's width (3 x 768 channels) and length range; k > 16 (lists over lanes)
CO4_CASES = [(2, 4096, 2304, 12), (1, LONG, 768, 12), (1, 3001, 200, 33)]


@pytest.mark.parametrize("case", CO4_CASES)
def test_running_topk(case, monkeypatch):
    """The parallel-in-time form (chunk tables, merge, chunks again) against the single pass, exactly on values
    and ranks and at every position on the gradient; both against the reference's values and ranks at 2k tokens."""
    from ops.co4 import triton as co4
    monkeypatch.setattr(co4, "FILL_FRESH_BUFFERS_WITH_NAN", True)
    B, T, C, k = case
    gen = torch.Generator(device="cuda").manual_seed(0)
    values = torch.randn(B, T, C, device="cuda", generator=gen).to(DTYPE)
    weights = torch.randn(B, T, k, C, device="cuda", generator=gen)
    results = {}
    for name, indices in (("single pass", True), ("parallel in time", False)):
        v = values.clone().requires_grad_()
        top, rank, _ = ops.running_topk(v, k, return_indices=indices, backend="triton")
        (grad,) = torch.autograd.grad((top.float() * weights).sum(), v)
        results[name] = (top, rank, grad)
    (top, rank, grad), (top_p, rank_p, grad_p) = results["single pass"], results["parallel in time"]
    assert torch.equal(top_p, top) and torch.equal(rank_p, rank)
    assert_close_everywhere("d values", grad_p.float(), grad.float(), DTYPE)
    head = values[:, :2048].float()
    expected_top, expected_rank, _ = ops.running_topk(head, k, backend="reference")
    assert torch.equal(top[:, :2048].float(), expected_top) and torch.equal(rank[:, :2048], expected_rank)

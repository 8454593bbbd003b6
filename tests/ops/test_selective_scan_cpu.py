"""The compiled CPU selective scan (ops/selective_scan/cpu.py) against the reference: outputs, last state and the
gradient of every input, on random inputs, ragged lengths (not a multiple of its 64-step chunk), every B/C
layout, with and without each option, fp32/bf16/fp64 inputs, a long sequence with strong and weak decays, rows
split across threads, packed documents (seq_idx, reset inside the kernel); and that ``backend="auto"`` on CPU
picks it (and falls back to the reference without it)."""
import functools
import importlib

import pytest
import torch

import ops
from ops.selective_scan.reference import selective_scan as reference_scan
from ops.testing import assert_close, packed_seq_idx
from tests.native import require_kernel, spy_on
from zoo.blocks.mamba import Mamba

cpu = importlib.import_module("ops.selective_scan.cpu")

require_kernel(cpu, "the CPU selective-scan kernel")

FLOAT_INPUTS = ("u", "delta", "B", "C", "z")      # cast to the dtype under test; A, D, delta_bias, h0 stay fp32


def make_inputs(batch=2, dim=6, length=150, n_state=4, b_layout="variable", c_layout="variable", groups=3,
                with_d=True, with_z=True, with_bias=True, with_h0=True, delta_scale=0.5, a_scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    shapes = {"invariant": (dim, n_state), "variable": (batch, n_state, length),
              "grouped": (batch, groups, n_state, length)}
    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=delta_scale),
        "A": -(torch.rand(dim, n_state, generator=g) * a_scale + 0.05),
        "B": rand(*shapes[b_layout]),
        "C": rand(*shapes[c_layout]),
        "D": rand(dim) if with_d else None,
        "z": rand(batch, dim, length) if with_z else None,
        "delta_bias": rand(dim, scale=0.5) if with_bias else None,
        "initial_state": rand(batch, dim, n_state) if with_h0 else None,
    }


def run(scan, inputs, dtype, softplus, seed=1):
    """Outputs, last state and every input gradient of ``scan`` for a random loss on out and on the last state."""
    leaves = {k: None if v is None else (v.to(dtype) if k in FLOAT_INPUTS else v).clone().requires_grad_(True)
              for k, v in inputs.items()}
    out, last = scan(**leaves, delta_softplus=softplus, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    loss = (out.float() * torch.randn(out.shape, generator=g)).sum() + (last * torch.randn(last.shape, generator=g)).sum()
    loss.backward()
    return {"out": out, "last state": last, **{f"d {k}": v.grad for k, v in leaves.items() if v is not None}}


def assert_matches_reference(inputs, dtype=torch.float32, softplus=True, scale=1.0, seq_idx=None):
    kernel = functools.partial(cpu.selective_scan, seq_idx=seq_idx)
    reference = functools.partial(reference_scan, seq_idx=seq_idx)
    got, want = run(kernel, inputs, dtype, softplus), run(reference, inputs, dtype, softplus)
    assert got.keys() == want.keys()
    assert got["out"].dtype == want["out"].dtype == dtype
    for name in want:
        assert_close(name, got[name].float(), want[name].float(), dtype if dtype != torch.float64 else torch.float32,
                     scale)


@pytest.mark.parametrize("layout", ["invariant", "variable", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("options", ["all", "none"])
def test_matches_reference(layout, dtype, options):
    on = options == "all"
    inputs = make_inputs(b_layout=layout, c_layout=layout, with_d=on, with_z=on, with_bias=on, with_h0=on)
    assert_matches_reference(inputs, dtype, softplus=on)


@pytest.mark.parametrize("b_layout, c_layout", [("invariant", "variable"), ("grouped", "variable"),
                                                ("variable", "invariant")])
def test_mixed_b_and_c_layouts(b_layout, c_layout):
    assert_matches_reference(make_inputs(b_layout=b_layout, c_layout=c_layout))


@pytest.mark.parametrize("length", [1, 63, 64, 65, 129])
def test_ragged_lengths_around_the_chunk(length):
    assert_matches_reference(make_inputs(length=length, n_state=16, dim=4))


@pytest.mark.parametrize("decay", ["strong", "weak"])
def test_long_sequence_stays_accurate(decay):
    """L = 2000: strong decays (delta*A down to about -60 per step) must not overflow; weak ones carry far."""
    scales = {"strong": dict(delta_scale=2.0, a_scale=16.0), "weak": dict(delta_scale=0.5, a_scale=0.01)}
    inputs = make_inputs(batch=1, dim=4, length=2000, n_state=16, **scales[decay])
    if decay == "weak":
        inputs["delta_bias"] = torch.full((4,), -4.0)   # softplus(-4) ~ 0.018: a state that lasts ~1000s of steps
    assert_matches_reference(inputs)


@pytest.mark.parametrize("starts", [[1, 63], [64, 65, 129], [5, 6, 7, 100, 149]], ids=str)
@pytest.mark.parametrize("layout", ["invariant", "variable", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_packed_documents_reset_in_the_kernel_like_the_reference(starts, layout, dtype):
    """Boundaries beside and on the 64-step chunk edges, one-step documents, a document at the last step; the
    second row has one document (no reset), the initial state reaches each row's first document only."""
    inputs = make_inputs(length=150, b_layout=layout, c_layout=layout)
    assert_matches_reference(inputs, dtype, seq_idx=packed_seq_idx(150, starts, []))


def test_auto_resets_packed_documents_in_the_cpu_kernel_without_a_gather(monkeypatch):
    calls = spy_on(monkeypatch, cpu, "selective_scan")
    monkeypatch.setattr("ops.packing.DocumentLayout", None)  # a gather would fail here
    inputs = make_inputs(batch=2, length=40)
    seq_idx = packed_seq_idx(40, [10, 30], [3])
    out, last = ops.selective_scan(**inputs, delta_softplus=True, seq_idx=seq_idx, return_last_state=True)
    assert len(calls) == 1 and calls[0].get("seq_idx") is seq_idx
    want, want_last = reference_scan(**inputs, delta_softplus=True, seq_idx=seq_idx, return_last_state=True)
    assert_close("out", out, want, torch.float32)
    assert_close("last state", last, want_last, torch.float32)


def test_softplus_beyond_its_linear_threshold():
    """softplus(x) is x above 20 (torch's threshold), and its gradient 1: delta + bias spans about -30..30 here."""
    inputs = make_inputs(length=40, delta_scale=15.0, a_scale=0.05)
    assert (inputs["delta"] + inputs["delta_bias"][:, None]).abs().max() > 20
    assert_matches_reference(inputs)


def test_float64_inputs_compute_in_float32_like_the_reference():
    assert_matches_reference(make_inputs(length=70), dtype=torch.float64)


def test_rows_split_across_threads(monkeypatch):
    """More worker threads than cores still gives the same sums of d_A, d_B, d_C over the rows."""
    monkeypatch.setattr(cpu.torch, "get_num_threads", lambda: 5)
    assert_matches_reference(make_inputs(batch=3, dim=7, length=100, b_layout="grouped", c_layout="grouped",
                                         groups=7))


def test_gradient_of_last_state_alone_and_of_out_alone():
    inputs = make_inputs(length=90)
    for pick in (0, 1):
        grads = []
        for scan in (cpu.selective_scan, reference_scan):
            leaves = {k: None if v is None else v.clone().requires_grad_(True) for k, v in inputs.items()}
            scan(**leaves, delta_softplus=True, return_last_state=True)[pick].square().sum().backward()
            grads.append({k: v.grad for k, v in leaves.items() if v is not None})
        for name, want in grads[1].items():  # an input that does not reach the loss: None or zeros
            got = grads[0][name]
            if want is None and got is None:
                continue
            got = torch.zeros_like(inputs[name]) if got is None else got
            want = torch.zeros_like(inputs[name]) if want is None else want
            if want.abs().max() == 0:
                assert got.abs().max() == 0, f"d {name} (output {pick}) should be zero"
            else:
                assert_close(f"d {name} (output {pick})", got, want, torch.float32)


def test_empty_sequence_returns_the_initial_state():
    inputs = make_inputs(length=0)
    out, last = cpu.selective_scan(**inputs, return_last_state=True)
    assert out.shape == (2, 6, 0)
    torch.testing.assert_close(last, inputs["initial_state"])


@pytest.mark.parametrize("bad, match", [
    (dict(B=torch.randn(2, 4, 9)), r"B has shape \(2, 4, 9\)"),
    (dict(C=torch.randn(2, 4, 4, 150)), "not divisible by the number of B/C groups 4"),
    (dict(D=torch.randn(5)), r"D has shape \(5,\); expected \(6,\)"),
    (dict(initial_state=torch.randn(2, 6, 3)), r"initial_state has shape"),
    (dict(A=torch.randn(6, 4, dtype=torch.complex64)), "complex A"),
])
def test_bad_inputs_raise_one_clear_error(bad, match):
    inputs = {**make_inputs(), **bad}
    with pytest.raises(ValueError, match=match):
        cpu.selective_scan(**inputs)


def test_auto_picks_the_cpu_kernel_and_falls_back_to_the_reference(monkeypatch):
    calls = spy_on(monkeypatch, cpu, "selective_scan")
    inputs = make_inputs()
    out = ops.selective_scan(**inputs, delta_softplus=True, backend="auto")
    assert len(calls) == 1
    ops.selective_scan(**inputs, delta_softplus=True, backend="reference")
    assert len(calls) == 1
    monkeypatch.setenv("ZOO_NATIVE", "0")                  # no compiled code: auto is the reference again
    assert not cpu.available() and "ZOO_NATIVE=0" in cpu.unavailable_reason()
    fallback = ops.selective_scan(**inputs, delta_softplus=True, backend="auto")
    assert len(calls) == 1
    assert_close("out (fallback)", fallback, out, torch.float32)


def test_mamba_auto_uses_the_kernel_and_decodes_like_its_forward(monkeypatch):
    """The Mamba block on CPU with backend="auto": same outputs and gradients as backend="reference", and a
    prefill of 70 tokens followed by 10 decode steps gives the full forward's outputs."""
    calls = spy_on(monkeypatch, cpu, "selective_scan")
    torch.manual_seed(0)
    fast = Mamba(16, d_state=8)
    slow = Mamba(16, d_state=8, backend="reference")
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 80, 16, generator=torch.Generator().manual_seed(1))
    want, got = slow(x), fast(x)
    assert calls, "backend='auto' on CPU did not reach the CPU kernel"
    assert_close("Mamba out", got, want, torch.float32)
    got.square().sum().backward()
    want.square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        assert_close(f"Mamba d {name}", p.grad, q.grad, torch.float32)
    with torch.no_grad():
        cache = fast.allocate_cache(2)
        steps = [fast(x[:, :70], cache)] + [fast(x[:, t:t + 1], cache) for t in range(70, 80)]
    assert_close("Mamba prefill + decode", torch.cat(steps, 1), got.detach(), torch.float32)


def test_runs_in_a_forked_child_after_the_parent_used_its_threads(monkeypatch):
    """A forked process (e.g. a fork-started worker) gets a fresh thread pool instead of the parent's dead one."""
    import multiprocessing
    monkeypatch.setattr(cpu.torch, "get_num_threads", lambda: 2)
    inputs = make_inputs(batch=2, dim=8, length=70)
    want = cpu.selective_scan(**inputs)
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        got = pool.apply_async(_scan_in_child, (inputs,)).get(timeout=120)
    assert_close("out in a forked child", got, want.detach(), torch.float32)


def _scan_in_child(inputs):
    cpu.torch.get_num_threads = lambda: 2  # the fork copied the patched function; keep two threads explicitly
    return cpu.selective_scan(**inputs).detach()


def test_the_packed_benchmark_case_times_two_ways_to_the_same_result():
    """``zoo.bench ops selective_scan``'s packed case: in-kernel restarts and one row per document agree."""
    from ops.selective_scan.bench import _packed_case
    case = _packed_case((2, 8, 40, 4, 6), torch.device("cpu"), torch.float32)
    inputs = case.make_inputs()
    assert int(inputs["seq_idx"][:, -1].min()) >= 2, "the case should pack several documents per row"
    gathered, in_place = (impl.fn(**inputs) for impl in case.impls)
    assert_close("packed benchmark outputs", in_place, gathered, torch.float32)

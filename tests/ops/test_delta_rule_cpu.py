"""ops.delta_rule and ops.gated_delta_rule with backend="auto" on CPU, which runs the compiled DPLR kernel
(ops/gated_delta_rule/cpu.py), against the per-token float64 loop of test_delta_rule.py: outputs, final state and
every input's gradient, with ragged lengths around the kernel's 16-step span, packed rows, beta near 0 and 2,
strong decays and low-precision inputs; and that "auto" takes this path while "reference" does not."""
import pytest
import torch

import ops
from ops.dplr_delta_rule import cpu as dplr_cpu
from ops.testing import assert_close, packed_seq_idx
from tests.native import skip_or_fail_without_native
from tests.ops.test_delta_rule import GATED, loop, make_inputs

if not dplr_cpu.available():  # a skip elsewhere; CI sets ZOO_REQUIRE_NATIVE=1, so there a missing compiler fails
    skip_or_fail_without_native(f"the CPU DPLR kernel is unavailable: {dplr_cpu.unavailable_reason()}")

NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def run(gated: bool, q, k, v, g, beta, **kwargs):
    if gated:
        return ops.gated_delta_rule(q, k, v, g, beta, backend="auto", **kwargs)
    return ops.delta_rule(q, k, v, beta, backend="auto", **kwargs)


def compare(gated, inputs, seq_idx=None, scale=None, dtype=torch.float64):
    q, k, v, g, beta, h0 = inputs
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta, h0)]
    o, final = run(gated, *leaves[:5], initial_state=leaves[5], output_final_state=True, seq_idx=seq_idx,
                   scale=scale)
    o_ref, final_ref = loop(*leaves[:3], leaves[3] if gated else None, leaves[4],
                            q.shape[-1] ** -0.5 if scale is None else scale, leaves[5], seq_idx)
    assert_close("output", o, o_ref, dtype)
    assert_close("final state", final, final_ref, dtype)
    gen = torch.Generator().manual_seed(5)
    up_o, up_s = torch.randn(o.shape, generator=gen).double(), torch.randn(final.shape, generator=gen).double()
    grads = torch.autograd.grad((o * up_o).sum() + (final * up_s).sum(), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad((o_ref * up_o).sum() + (final_ref * up_s).sum(), leaves, allow_unused=True)
    for name, grad, grad_ref in zip(NAMES, grads, grads_ref):
        if name == "g" and not gated:
            assert grad is None and grad_ref is None
            continue
        assert_close(f"grad of {name}", grad, grad_ref, dtype)


@GATED
@pytest.mark.parametrize("T", [1, 15, 16, 17, 40])
def test_outputs_state_and_every_gradient_match_the_loop(gated, T):
    compare(gated, make_inputs(T=T, beta_range=(0.0, 2.0), seed=T), scale=0.7)


@GATED
def test_packed_rows_restart_the_state_at_each_document(gated):
    compare(gated, make_inputs(T=13), seq_idx=packed_seq_idx(13, [4, 5, 9], [12]))


@GATED
@pytest.mark.parametrize("beta_range", [(0.0, 1e-3), (1.999, 2.0)], ids=["beta~0", "beta~2"])
def test_beta_near_zero_and_near_two(gated, beta_range):
    compare(gated, make_inputs(T=21, beta_range=beta_range))


def test_strong_decays_forget_and_stay_finite():
    inputs = make_inputs(T=40, decay=30.0)
    inputs[3][:, 17] = -200.0  # exp(-200): the state before position 17 is gone
    compare(True, inputs)
    leaves = [x.float().requires_grad_() for x in inputs]
    o, final = run(True, *leaves[:5], initial_state=leaves[5], output_final_state=True)
    (o.sum() + final.sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


@GATED
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_match_the_loop_within_their_precision(gated, dtype):
    q, k, v, g, beta, h0 = make_inputs(T=33, beta_range=(0.0, 2.0))
    o_ref, final_ref = loop(q, k, v, g if gated else None, beta, 4 ** -0.5, h0)
    leaves = [x.to(dtype).requires_grad_() for x in (q, k, v, g, beta, h0)]
    o, final = run(gated, *leaves[:5], initial_state=leaves[5], output_final_state=True)
    assert o.dtype == dtype and final.dtype == torch.float32
    (o.float().sum() + final.sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in (leaves if gated else leaves[:3] + leaves[4:]))
    assert_close("output", o.float(), o_ref, dtype, scale=2.0)
    assert_close("final state", final, final_ref, dtype, scale=2.0)


@GATED
def test_auto_runs_the_kernel_and_reference_does_not(gated, monkeypatch):
    calls = []
    real = dplr_cpu.dplr_delta_rule_cpu
    monkeypatch.setattr(dplr_cpu, "dplr_delta_rule_cpu", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v, g, beta, h0 = make_inputs(T=9, dtype=torch.float32)
    o_auto, s_auto = run(gated, q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert calls == [1]
    reference = ops.gated_delta_rule if gated else (lambda q, k, v, g, beta, **kw: ops.delta_rule(q, k, v, beta, **kw))
    o_ref, s_ref = reference(q, k, v, g, beta, initial_state=h0, output_final_state=True, backend="reference")
    assert calls == [1]
    assert_close("output", o_auto, o_ref, torch.float32)
    assert_close("final state", s_auto, s_ref, torch.float32)

"""ops.gla with backend="auto" on CPU, which runs the compiled DPLR kernel with no low-rank part
(ops/gla/cpu.py), against the per-step float64 loop of test_gla.py: outputs, final state and every input's
gradient, ragged lengths, initial states, packed rows, scale, float32 and bfloat16, strong decays; and that
"auto" takes this path while "reference" does not."""
import pytest
import torch

import ops
from ops.dplr_delta_rule import cpu as dplr_cpu
from ops.testing import assert_close
from tests.native import skip_or_fail_without_native
from tests.ops.test_gla import ALL, make_inputs, per_step_loop
from tests.peers.grads import outputs_and_grads

if not dplr_cpu.available():  # a skip elsewhere; CI sets ZOO_REQUIRE_NATIVE=1, so there a missing compiler fails
    skip_or_fail_without_native(f"the CPU DPLR kernel is unavailable: {dplr_cpu.unavailable_reason()}")


def compare(length, options, dtype, decay_scale=1.0):
    inputs, flags = make_inputs(T=length, options=options, decay_scale=decay_scale)
    inputs = {k: v.to(dtype) for k, v in inputs.items()}
    grad_out = torch.randn(inputs["v"].shape, generator=torch.Generator().manual_seed(5))
    (o, final), grads = outputs_and_grads(
        lambda **kw: ops.gla(**kw, output_final_state=True, backend="auto", **flags), inputs, grad_out.to(dtype))
    (o_want, final_want), grads_want = outputs_and_grads(
        lambda **kw: per_step_loop(**kw, **flags), {k: v.double() for k, v in inputs.items()}, grad_out.double())
    assert o.dtype == dtype
    assert_close("o", o.float(), o_want, dtype)
    assert_close("final state", final.float(), final_want, dtype)
    for name, grad in grads_want.items():
        assert grads[name].dtype == dtype and torch.isfinite(grads[name]).all()
        if decay_scale == 1.0 or name != "g":  # d/dg of exp(-1e4) is 0 in float32, tiny in float64
            assert_close(f"grad {name}", grads[name].float(), grad, dtype, scale=2.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("length, options", [(1, ("initial_state",)), (17, ()), (37, ALL)])
def test_outputs_final_state_and_every_gradient_match_the_per_step_loop(length, options, dtype):
    compare(length, options, dtype)


@pytest.mark.parametrize("decay_scale", [1e2, 1e4])
def test_strong_decays_stay_finite_and_exact(decay_scale):
    compare(40, ("initial_state", "seq_idx"), torch.float32, decay_scale)


def test_auto_runs_the_kernel_and_reference_does_not(monkeypatch):
    calls = []
    real = dplr_cpu.dplr_delta_rule_cpu
    monkeypatch.setattr(dplr_cpu, "dplr_delta_rule_cpu", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    inputs, _ = make_inputs(T=9, options=("initial_state",))
    o_auto, s_auto = ops.gla(**inputs, output_final_state=True)
    assert calls == [1]
    o_ref, s_ref = ops.gla(**inputs, output_final_state=True, backend="reference")
    assert calls == [1]
    assert_close("o", o_auto, o_ref, torch.float32)
    assert_close("final state", s_auto, s_ref, torch.float32)

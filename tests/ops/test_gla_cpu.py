"""ops.gla with backend="auto" on CPU, which runs the compiled DPLR kernel with no low-rank part
(ops/gla/cpu.py), against the per-step float64 loop of test_gla.py: outputs, final state and every input's
gradient, ragged lengths, initial states, packed rows, scale, float32 and bfloat16, strong decays; and that
"auto" takes this path while "reference" does not."""
import pytest
import torch

import ops
from ops.dplr_delta_rule import cpu as dplr_cpu
from ops.testing import assert_close
from tests.native import require_kernel, spy_on
from tests.ops.test_gla import ALL, make_inputs, results
from tests.peers.grads import assert_same_outputs_and_grads

require_kernel(dplr_cpu, "the CPU DPLR kernel")


def compare(length, options, dtype, decay_scale=1.0):
    got, want = results(lambda **kw: ops.gla(**kw, backend="auto"), length, options, dtype, decay_scale)
    (o, final), grads = got
    assert o.dtype == dtype
    for grad in grads.values():
        assert grad.dtype == dtype and torch.isfinite(grad).all()
    if decay_scale != 1.0:
        del want[1]["g"]  # d/dg of exp(-1e4) is 0 in float32, tiny in float64
    assert_same_outputs_and_grads(got, want, ("o", "final state"), dtype, grad_scale=2.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("length, options", [(1, ("initial_state",)), (17, ()), (37, ALL)])
def test_outputs_final_state_and_every_gradient_match_the_per_step_loop(length, options, dtype):
    compare(length, options, dtype)


@pytest.mark.parametrize("decay_scale", [1e2, 1e4])
def test_strong_decays_stay_finite_and_exact(decay_scale):
    compare(40, ("initial_state", "seq_idx"), torch.float32, decay_scale)


def test_auto_runs_the_kernel_and_reference_does_not(monkeypatch):
    calls = spy_on(monkeypatch, dplr_cpu, "dplr_delta_rule_cpu")
    inputs, _ = make_inputs(T=9, options=("initial_state",))
    o_auto, s_auto = ops.gla(**inputs, output_final_state=True)
    assert len(calls) == 1
    o_ref, s_ref = ops.gla(**inputs, output_final_state=True, backend="reference")
    assert len(calls) == 1
    assert_close("o", o_auto, o_ref, torch.float32)
    assert_close("final state", s_auto, s_ref, torch.float32)

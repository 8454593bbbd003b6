"""ops.delta_rule and ops.gated_delta_rule with backend="auto" on CPU, which runs the compiled DPLR kernel
(ops/gated_delta_rule/cpu.py), against the per-token float64 loop of test_delta_rule.py: outputs, final state and
every input's gradient, with ragged lengths around the kernel's 16-step span, packed rows, beta near 0 and 2,
strong decays and low-precision inputs; and that "auto" takes this path while "reference" does not."""
import pytest
import torch

from ops.dplr_delta_rule import cpu as dplr_cpu
from ops.testing import assert_close, packed_seq_idx
from tests.native import require_kernel, spy_on
from tests.ops.test_delta_rule import (GATED, assert_float32_gradients_finite, check_low_precision, compare,
                                       make_inputs, run, strong_decay_inputs)

require_kernel(dplr_cpu, "the CPU DPLR kernel")


@GATED
@pytest.mark.parametrize("T", [1, 15, 16, 17, 40])
def test_outputs_state_and_every_gradient_match_the_loop(gated, T):
    compare(gated, make_inputs(T=T, beta_range=(0.0, 2.0), seed=T), scale=0.7, backend="auto")


@GATED
def test_packed_rows_restart_the_state_at_each_document(gated):
    compare(gated, make_inputs(T=13), seq_idx=packed_seq_idx(13, [4, 5, 9], [12]), backend="auto")


@GATED
@pytest.mark.parametrize("beta_range", [(0.0, 1e-3), (1.999, 2.0)], ids=["beta~0", "beta~2"])
def test_beta_near_zero_and_near_two(gated, beta_range):
    compare(gated, make_inputs(T=21, beta_range=beta_range), backend="auto")


def test_strong_decays_forget_and_stay_finite():
    inputs = strong_decay_inputs()
    compare(True, inputs, backend="auto")
    assert_float32_gradients_finite(inputs, backend="auto")


@GATED
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_match_the_loop_within_their_precision(gated, dtype):
    check_low_precision(gated, dtype, backend="auto")


@GATED
def test_auto_runs_the_kernel_and_reference_does_not(gated, monkeypatch):
    calls = spy_on(monkeypatch, dplr_cpu, "dplr_delta_rule_cpu")
    q, k, v, g, beta, h0 = make_inputs(T=9, dtype=torch.float32)
    o_auto, s_auto = run(gated, q, k, v, g, beta, initial_state=h0, output_final_state=True, backend="auto")
    assert len(calls) == 1
    o_ref, s_ref = run(gated, q, k, v, g, beta, initial_state=h0, output_final_state=True, backend="reference")
    assert len(calls) == 1
    assert_close("output", o_auto, o_ref, torch.float32)
    assert_close("final state", s_auto, s_ref, torch.float32)

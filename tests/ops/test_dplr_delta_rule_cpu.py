"""The compiled CPU DPLR delta rule (ops/dplr_delta_rule/cpu.py) against the per-step float64 loop of
test_dplr_delta_rule.py: outputs, final state and the gradient of every input, with and without an initial state,
ragged lengths around its 16-step checkpoint span, packed documents, strong decays, low-precision inputs, rows
split across threads; and that ``backend="auto"`` on CPU picks it (and "reference" does not)."""
import importlib

import pytest
import torch

import ops
from ops.testing import assert_close
from tests.helpers import dplr_inputs
from tests.native import require_kernel, spy_on
from tests.ops.test_dplr_delta_rule import (check_low_precision, check_packed_documents, check_strong_decays, compare,
                                            loop)

cpu = importlib.import_module("ops.dplr_delta_rule.cpu")

require_kernel(cpu, "the CPU DPLR kernel")


@pytest.mark.parametrize("T", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("initial_state", [True, False])
def test_kernel_matches_the_loop(T, initial_state):
    inputs, grad_out = dplr_inputs(T=T, initial_state=initial_state, seed=T)
    compare(inputs, grad_out, cpu.dplr_delta_rule_cpu)


@pytest.mark.parametrize("V", [16, 32, 64])
def test_value_sizes_with_their_own_compiled_copy(V):
    """V = 16, 32, 64 run copies of the loops compiled for that size; the others a generic one."""
    inputs, grad_out = dplr_inputs(B=1, T=19, K=3, V=V, seed=V)
    compare(inputs, grad_out, cpu.dplr_delta_rule_cpu)


@pytest.mark.parametrize("scale", [None, 0.7])
def test_auto_on_cpu_matches_the_loop(scale):
    inputs, grad_out = dplr_inputs(B=3, T=23, H=1, K=4, V=7, seed=1)
    compare(inputs, grad_out, lambda **kw: ops.dplr_delta_rule(**kw, backend="auto"), scale=scale)


def test_packed_documents_restart_the_state():
    check_packed_documents(lambda **kw: ops.dplr_delta_rule(**kw, backend="auto"))


def test_strong_decays_stay_exact():
    """gk down to -60 per step: the kernel multiplies by exp(gk) one step at a time, nothing to overflow."""
    check_strong_decays(cpu.dplr_delta_rule_cpu)


def test_rows_split_across_threads(monkeypatch):
    """Several threads, each a range of (batch, head) rows: the same numbers as one thread."""
    inputs, grad_out = dplr_inputs(B=3, T=20, H=3, seed=6)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    compare(inputs, grad_out, cpu.dplr_delta_rule_cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_run_in_float32(dtype):
    check_low_precision(cpu.dplr_delta_rule_cpu, dtype, decay=0.6)


def test_without_gradients_the_same_outputs():
    """No backward to come: the forward saves no states, and gives the same numbers."""
    inputs, _ = dplr_inputs(T=21, seed=8)
    with torch.no_grad():
        got = cpu.dplr_delta_rule_cpu(**inputs, output_final_state=True)
    want = loop(**inputs, output_final_state=True)
    assert_close("o", got[0], want[0], torch.float64)
    assert_close("final state", got[1], want[1], torch.float64)


def test_auto_takes_the_kernel_and_falls_back_to_the_reference(monkeypatch):
    inputs, _ = dplr_inputs(T=5, seed=7)
    calls = spy_on(monkeypatch, cpu, "dplr_delta_rule_cpu")
    o, _ = ops.dplr_delta_rule(**inputs, backend="auto")
    assert len(calls) == 1
    ops.dplr_delta_rule(**inputs, backend="reference")
    assert len(calls) == 1, "backend='reference' must run the reference"
    monkeypatch.setenv("ZOO_NATIVE", "0")  # no compiled code: auto is the reference again
    assert not cpu.available() and "ZOO_NATIVE=0" in cpu.unavailable_reason()
    fallback, _ = ops.dplr_delta_rule(**inputs, backend="auto")
    assert len(calls) == 1
    assert_close("o (fallback)", fallback, o, torch.float64)

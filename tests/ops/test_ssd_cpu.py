"""The CPU SSD with compiled intra-chunk weights (ops/ssd/cpu.py) against the float64 per-step loop and against the
reference: outputs, final state and every input's gradient on test_ssd's cases (groups, initial states, ragged
lengths, several chunk sizes, seq_idx, the dt options), float32 and bfloat16, Mamba-2's one-chunk training shape,
strong decays; the weights alone against ``reference.chunk_scores``; and that ``backend="auto"`` on CPU picks it."""
import importlib

import pytest
import torch

import ops
from ops.ssd.reference import chunk_scores, ssd_chunked
from ops.testing import assert_close_everywhere
from tests.native import require_kernel, spy_on
from tests.ops.test_ssd import ALL, CASES, _case_id, case_inputs, check_strong_decays, loop_results, make_inputs
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads

cpu = importlib.import_module("ops.ssd.cpu")

require_kernel(cpu, "the CPU SSD kernel")

# test_ssd's cases, and one chunk from a zero state (the block's CPU training path, no state passes)
COMPILED_CASES = CASES + [(64, 64, 1, ("D", "dt_bias", "dt_softplus"))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", COMPILED_CASES, ids=_case_id)
def test_compiled_matches_the_per_step_loop_and_the_reference(case, dtype):
    length, chunk, groups, options = case
    inputs, flags, grad_out = case_inputs(case, dtype)
    grad_out = grad_out.to(dtype)
    # the one-chunk shortcut returns no state: ask for one only where the state passes run anyway
    one_chunk = length <= chunk and "initial_states" not in options
    names = ("y",) if one_chunk else ("y", "final state")
    got, ref = (outputs_and_grads(lambda **kw: ssd_fn(**kw, chunk_size=chunk, return_final_states=not one_chunk,
                                                      **flags), inputs, grad_out)
                for ssd_fn in (cpu.ssd_cpu, ssd_chunked))
    (y, *final), grads = got
    assert y.dtype == dtype and all(grad.dtype == dtype for grad in grads.values())
    assert all(state.dtype == torch.float32 for state in final)
    assert_same_outputs_and_grads(got, loop_results(inputs, flags, grad_out, len(names)), names, dtype,
                                  grad_scale=2.0)
    assert_same_outputs_and_grads(got, ref, names, dtype, grad_scale=2.0, against=" against the reference")


@pytest.mark.parametrize("with_documents", [False, True])
def test_weights_and_their_gradients_match_chunk_scores(with_documents):
    """The kernel's piece alone, every position: groups of several heads, a chunk of 7, packed documents."""
    gen = torch.Generator().manual_seed(3)
    b, c, g, r, Q = 2, 3, 2, 3, 7
    CB = torch.randn(b, c, g, Q, Q, generator=gen)
    log_decay = (-torch.rand(b, c, g, r, Q, generator=gen)).cumsum(-1)
    dts = torch.rand(b, c, g, r, Q, generator=gen) + 0.05
    pairs = None
    if with_documents:
        ids = torch.randint(0, 2, (b, c, Q), generator=gen).cumsum(-1)
        pairs = ids[..., :, None] == ids[..., None, :]
    weights = torch.randn(b, c, g, r, Q, Q, generator=gen)
    results = []
    for fn in (cpu.chunk_scores, chunk_scores):
        leaves = [t.clone().requires_grad_(True) for t in (CB, log_decay, dts)]
        out = fn(*leaves, pairs)
        (out * weights).sum().backward()
        results.append([out] + [t.grad for t in leaves])
    for name, mine, want in zip(("weights", "d CB", "d log_decay", "d dts"), *results):
        assert_close_everywhere(name, mine, want, torch.float32)


def test_strong_decays_stay_finite():
    check_strong_decays(cpu.ssd_cpu)


def test_auto_picks_it_on_cpu_and_not_for_float64(monkeypatch):
    original = cpu.ssd_cpu
    calls = spy_on(monkeypatch, cpu, "ssd_cpu")
    inputs, flags = make_inputs(length=9, options=ALL)
    ops.ssd(**inputs, chunk_size=4, **flags)
    assert len(calls) == 1
    ops.ssd(**{k: v.double() for k, v in inputs.items()}, chunk_size=4, **flags)
    ops.ssd(**inputs, chunk_size=4, backend="reference", **flags)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="float64"):
        original(**{k: v.double() for k, v in inputs.items()}, chunk_size=4, **flags)

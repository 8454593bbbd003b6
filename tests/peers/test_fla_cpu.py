"""Against fla's own code, on CPU: ``ops.linear_recurrence`` against fla's ``naive_recurrent_hgrn`` and
``ops.based_attention`` against fla's ``naive_parallel_based`` and its Triton ``parallel_based`` kernel (run by
Triton's interpreter here): outputs, final states and gradients, with both of our backends.

fla's naive functions take (batch, heads, T, dim); its public kernels and ours take (batch, T, heads, dim).
"""
import pytest
import torch
import torch.nn.functional as F

import ops
from tests.peers import cpu_peers
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads

BACKENDS = ["reference", "triton"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_initial_state", [True, False])
def test_linear_recurrence_matches_naive_recurrent_hgrn(backend, with_initial_state):
    naive = cpu_peers.fla_module("fla.ops.hgrn.naive").naive_recurrent_hgrn
    gen = torch.Generator().manual_seed(0)
    batch, length, dim = 2, 53, 20
    inputs = dict(x=torch.randn(batch, length, dim, generator=gen),
                  g=F.logsigmoid(torch.randn(batch, length, dim, generator=gen) + 2))
    if with_initial_state:
        inputs["initial_state"] = torch.randn(batch, dim, generator=gen)
    grad_out = torch.randn(batch, length, dim, generator=gen)

    want = outputs_and_grads(lambda **kw: naive(**kw, output_final_state=True), inputs, grad_out)
    got = outputs_and_grads(
        lambda **kw: ops.linear_recurrence(**kw, output_final_state=True, backend=backend), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("h", "final state"))


def _based_inputs(batch=2, length=45, heads=2, feature_dim=16, head_dim=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, length, heads, feature_dim, generator=gen) * 0.5 for _ in range(2))
    v = torch.randn(batch, length, heads, head_dim, generator=gen)
    return dict(q=q, k=k, v=v), torch.randn(batch, length, heads, head_dim, generator=gen)


def _head_first(fn):
    """Wrap a (B, H, T, D) function of fla's naive module as a (B, T, H, D) one."""
    def wrapped(q, k, v, **kw):
        return fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), **kw).transpose(1, 2)
    return wrapped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_norm", [True, False])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_based_attention_matches_naive_parallel_based(backend, use_norm, scale):
    naive = cpu_peers.fla_module("fla.ops.based.naive").naive_parallel_based
    inputs, grad_out = _based_inputs()
    options = dict(scale=scale, use_norm=use_norm)
    want = outputs_and_grads(lambda **kw: _head_first(naive)(**kw, **options), inputs, grad_out)
    got = outputs_and_grads(lambda **kw: ops.based_attention(**kw, **options, backend=backend), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o",))


def test_based_attention_matches_fla_parallel_based_kernel():
    """fla's own Triton kernel (forward and backward), interpreted on CPU, at a length over its 128-row tile."""
    parallel_based = cpu_peers.fla_module("fla.ops.based").parallel_based
    inputs, grad_out = _based_inputs(batch=1, length=150, heads=2, feature_dim=16, head_dim=16, seed=3)
    want = outputs_and_grads(lambda **kw: parallel_based(**kw, scale=None, use_norm=True), inputs, grad_out)
    got = outputs_and_grads(lambda **kw: ops.based_attention(**kw, backend="reference"), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o",))

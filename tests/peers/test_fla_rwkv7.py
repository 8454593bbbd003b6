"""Against fla's own code, on CPU: ``ops.dplr_delta_rule`` against fla's naive ``dplr_recurrence`` (outputs, final
state, every gradient) and its Triton ``fused_recurrent_dplr_delta_rule`` (interpreted); the RWKV7 block against
fla's ``RWKV7Attention`` layer with one state dict loaded both ways.

What runs of fla's layer here: its eval forward end to end on its own Triton kernels in the interpreter (token
shift, the fused token mixes, the k update, ``fused_mul_recurrent_rwkv7``, the output correction); for gradients,
its training forward and backward with those kernels, except that ``chunk_rwkv7`` is replaced by fla's naive
``dplr_recurrence``: fla's chunked DPLR kernels do not run in Triton's interpreter (``chunk_dplr_fwd_kernel_h``
calls ``.to`` on a loop index, a Python int there). Its decoding cache needs transformers and is not exercised.
fla's kernels are autotuned; the interpreter cannot time configurations, so each takes its first one here.
"""
import pytest
import torch

import ops
from tests.helpers import dplr_inputs
from tests.peers import cpu_peers
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads
from zoo.blocks.rwkv7 import RWKV7, VALUE_RESIDUAL_KEY

D_MODEL, HEAD_DIM = 32, 16


@pytest.fixture(autouse=True)
def first_config_under_the_interpreter(monkeypatch):
    cpu_peers.first_autotune_config(monkeypatch)


def _head_first(fn):
    """fla's naive functions take (B, H, T, D)."""
    def wrapped(q, k, v, a, b, gk, **kw):
        o, state = fn(*(x.transpose(1, 2) for x in (q, k, v, a, b, gk)), **kw)
        return o.transpose(1, 2), state
    return wrapped


def _float32(inputs):
    return {name: x.float() for name, x in inputs.items()}


# "auto" on CPU is the compiled C kernel (ops/dplr_delta_rule/cpu.py) where it builds
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("initial_state", [True, False])
def test_dplr_delta_rule_matches_fla_naive_recurrence(initial_state, backend):
    naive = cpu_peers.fla_module("fla.ops.generalized_delta_rule.dplr.naive").dplr_recurrence
    inputs, grad_out = dplr_inputs(T=21, initial_state=initial_state, seed=7)
    inputs, grad_out = _float32(inputs), grad_out.float()
    want = outputs_and_grads(lambda **kw: _head_first(naive)(**kw, output_final_state=True), inputs, grad_out)
    got = outputs_and_grads(
        lambda **kw: ops.dplr_delta_rule(**kw, output_final_state=True, backend=backend), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o", "final state"))


def test_dplr_delta_rule_matches_fla_fused_recurrent_kernel():
    fused = cpu_peers.fla_module("fla.ops.generalized_delta_rule").fused_recurrent_dplr_delta_rule
    inputs, _ = dplr_inputs(T=13, seed=8)
    inputs = _float32(inputs)
    with torch.no_grad():
        want = fused(**inputs, scale=0.5, output_final_state=True)
        got = ops.dplr_delta_rule(**inputs, scale=0.5, output_final_state=True, backend="reference")
    for name, actual, expected in zip(("o", "final state"), got, want):
        ops.testing.assert_close(name, actual, expected, torch.float32)


def _layer_pair(layer_idx: int, seed: int, backend: str = "reference"):
    """fla's layer with every parameter moved off its init (o_proj starts at zero there), and ours loaded from it."""
    rwkv7 = cpu_peers.fla_layer("fla.layers.rwkv7")
    torch.manual_seed(seed)
    theirs = rwkv7.RWKV7Attention(hidden_size=D_MODEL, head_dim=HEAD_DIM, layer_idx=layer_idx, num_hidden_layers=2)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    ours = RWKV7(D_MODEL, layer_idx=layer_idx, head_dim=HEAD_DIM, num_hidden_layers=2, backend=backend)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict()), "same parameter names"
    ours.load_state_dict(theirs.state_dict())
    return rwkv7, theirs, ours


@pytest.mark.parametrize("layer_idx", [0, 1])
def test_block_matches_fla_rwkv7_attention_both_ways(layer_idx):
    _, theirs, ours = _layer_pair(layer_idx, seed=layer_idx)
    x, v_first = torch.randn(2, 10, D_MODEL), torch.randn(2, 10, D_MODEL)
    channel = {} if layer_idx == 0 else {VALUE_RESIDUAL_KEY: v_first}
    with torch.no_grad():
        want = theirs.eval()(x, v_first=v_first)[0]
        got = ours(x, cross_layer=channel)
    ops.testing.assert_close("output", got, want, torch.float32)
    # and back: fla's layer loads our state dict
    theirs.load_state_dict({k: v * 1.1 for k, v in ours.state_dict().items()})
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        ops.testing.assert_close("output after loading ours", ours(x, cross_layer=dict(channel)),
                                 theirs(x, v_first=v_first)[0], torch.float32)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_block_gradients_match_fla_rwkv7_attention(monkeypatch, backend):
    rwkv7, theirs, ours = _layer_pair(1, seed=3, backend=backend)
    naive = cpu_peers.fla_module("fla.ops.generalized_delta_rule.dplr.naive").dplr_recurrence

    def chunk_rwkv7_naive(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, **_):
        # the naive function scales q by K^-0.5 itself
        return _head_first(naive)(r * scale * r.shape[-1] ** 0.5, k, v, a, b, w, initial_state=initial_state,
                                  output_final_state=output_final_state)

    monkeypatch.setattr(rwkv7, "chunk_rwkv7", chunk_rwkv7_naive)
    x, v_first = torch.randn(2, 9, D_MODEL), torch.randn(2, 9, D_MODEL)
    upstream = torch.randn(2, 9, D_MODEL)
    results = []
    for run in (lambda xi: theirs.train()(xi, v_first=v_first)[0],
                lambda xi: ours(xi, cross_layer={VALUE_RESIDUAL_KEY: v_first})):
        xi = x.clone().requires_grad_()
        (run(xi) * upstream).sum().backward()
        results.append(xi.grad)
    ops.testing.assert_close("input grad", results[1], results[0], torch.float32)
    theirs_grads = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        ops.testing.assert_close(f"grad {name}", param.grad, theirs_grads[name].grad, torch.float32)



"""Against fla's own code, on CPU: ``ops.delta_rule`` and ``ops.gated_delta_rule`` against fla's naive
functions (``delta_rule_recurrence``, ``naive_recurrent_gated_delta_rule``, ``naive_chunk_gated_delta_rule``) and
its Triton ``fused_recurrent_*`` kernels (in Triton's interpreter, tiny shapes; the ``chunk_*`` ones do not run
there); and the DeltaNet and
GatedDeltaNet blocks against flash-linear-attention's layers: a state dict loads both ways and gives the same
outputs (fla's layers run their fused recurrent kernels, short convolutions and norms in the interpreter).

fla's ``delta_rule_recurrence`` takes (batch, heads, T, dim); everything else here takes (batch, T, heads, dim).
"""
import pytest
import torch
import torch.nn.functional as F

import ops
from ops.testing import assert_close
from tests.peers import cpu_peers
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads
from zoo.blocks import DeltaNet, GatedDeltaNet


def _inputs(gated: bool, batch=2, length=21, heads=2, k_dim=8, v_dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = dict(q=torch.randn(batch, length, heads, k_dim, generator=gen),
                  k=F.normalize(torch.randn(batch, length, heads, k_dim, generator=gen), dim=-1),
                  v=torch.randn(batch, length, heads, v_dim, generator=gen),
                  beta=2 * torch.rand(batch, length, heads, generator=gen))
    if gated:
        inputs["g"] = F.logsigmoid(torch.randn(batch, length, heads, generator=gen) + 2)
    inputs["initial_state"] = torch.randn(batch, heads, k_dim, v_dim, generator=gen)
    return inputs, torch.randn(batch, length, heads, v_dim, generator=gen)


def _ours(gated: bool):
    if gated:
        return lambda **kw: ops.gated_delta_rule(**kw, output_final_state=True, chunk_size=8)
    return lambda **kw: ops.delta_rule(**kw, output_final_state=True, chunk_size=8)


def test_delta_rule_matches_delta_rule_recurrence():
    naive = cpu_peers.fla_module("fla.ops.delta_rule.naive").delta_rule_recurrence
    inputs, grad_out = _inputs(gated=False)

    def head_first(q, k, v, beta, initial_state):
        o, state = naive(*(x.transpose(1, 2) for x in (q, k, v, beta)), initial_state=initial_state,
                         output_final_state=True)
        return o.transpose(1, 2), state
    want = outputs_and_grads(head_first, inputs, grad_out)
    got = outputs_and_grads(_ours(False), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o", "final state"))


@pytest.mark.parametrize("naive_name", ["naive_recurrent_gated_delta_rule", "naive_chunk_gated_delta_rule"])
def test_gated_delta_rule_matches_fla_naive(naive_name):
    naive = getattr(cpu_peers.fla_module("fla.ops.gated_delta_rule.naive"), naive_name)
    inputs, grad_out = _inputs(gated=True)
    want = outputs_and_grads(lambda **kw: naive(**kw, scale=0.3, output_final_state=True), inputs, grad_out)
    got = outputs_and_grads(lambda **kw: _ours(True)(**kw, scale=0.3), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o", "final state"))


@pytest.mark.parametrize("gated", [False, True], ids=["delta_rule", "gated_delta_rule"])
def test_fla_fused_recurrent_kernels_match_ours(gated):
    """fla's own decoding kernels (the blocks' backend="fla" decode path on a GPU) in the interpreter: output and
    final state. fla's chunk kernels (the training path) do not run in Triton 3.9's interpreter (their autotuner
    benchmarks through a GPU driver, and with one config left a kernel fails inside the interpreter), so they are
    checked on a GPU only."""
    module = cpu_peers.fla_module("fla.ops.gated_delta_rule" if gated else "fla.ops.delta_rule")
    fla_fn = getattr(module, f"fused_recurrent_{'gated_' if gated else ''}delta_rule")
    inputs, _ = _inputs(gated, batch=1, length=20, heads=2, k_dim=16, v_dim=16)
    with torch.no_grad():
        want = fla_fn(**inputs, output_final_state=True)
        got = _ours(gated)(**inputs)
    for label, actual, expected in zip(("o", "final state"), got, want, strict=True):
        assert_close(label, actual, expected, torch.float32)


# ---- the blocks against fla's layers ---------------------------------------------------------------------------
D_MODEL = 32
LAYERS = {
    "DeltaNet": (DeltaNet, "fla.layers.delta_net", dict(num_heads=2)),
    "DeltaNet-gate-neg": (DeltaNet, "fla.layers.delta_net", dict(num_heads=2, use_gate=True, allow_neg_eigval=True)),
    "GatedDeltaNet": (GatedDeltaNet, "fla.layers.gated_deltanet", dict(num_heads=2, head_dim=16, expand_v=1)),
    "GatedDeltaNet-gva": (GatedDeltaNet, "fla.layers.gated_deltanet",
                          dict(num_heads=1, num_v_heads=2, head_dim=16, expand_v=1, allow_neg_eigval=True)),
}


@pytest.fixture(autouse=True)
def first_config_under_the_interpreter(monkeypatch):
    cpu_peers.first_autotune_config(monkeypatch)


def _fla_layer(case: str):
    ours_cls, module, hyper = LAYERS[case]
    fla_cls = getattr(cpu_peers.fla_layer(module), ours_cls.__name__)
    return ours_cls, fla_cls, hyper


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_block_state_dicts_load_both_ways_with_equal_outputs(case):
    ours_cls, fla_cls, hyper = _fla_layer(case)
    torch.manual_seed(0)
    fla_layer = fla_cls(hidden_size=D_MODEL, layer_idx=0, **hyper)
    ours = ours_cls(D_MODEL, backend="reference", **hyper)
    assert set(ours.state_dict()) == set(fla_layer.state_dict())
    ours.load_state_dict(fla_layer.state_dict())
    x = torch.randn(2, 12, D_MODEL, generator=torch.Generator().manual_seed(1))
    fla_layer.eval()  # no gradients, 12 tokens: fla's layers take their fused recurrent kernels
    with torch.no_grad():
        assert_close("fla -> ours", ours(x), fla_layer(x)[0], torch.float32)

    # and back: our freshly drawn weights into fla's layer (every parameter perturbed, so none is left default)
    torch.manual_seed(2)
    ours = ours_cls(D_MODEL, backend="reference", **hyper)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fla_layer.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert_close("ours -> fla", fla_layer(x)[0], ours(x), torch.float32)


def test_same_seed_draws_the_same_weights_as_fla():
    ours_cls, fla_cls, hyper = _fla_layer("GatedDeltaNet")
    torch.manual_seed(3)
    fla_state = fla_cls(hidden_size=D_MODEL, **hyper).state_dict()
    torch.manual_seed(3)
    for name, value in ours_cls(D_MODEL, **hyper).state_dict().items():
        torch.testing.assert_close(value, fla_state[name], rtol=0, atol=0, msg=name)

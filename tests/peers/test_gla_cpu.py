"""Against fla's own code, on CPU: ``ops.gla`` against fla-core's ``naive_recurrent_gla`` and its Triton
``fused_recurrent_gla`` (in Triton's interpreter, through our fla adapter, packed rows included), and the GLA block
against flash-linear-attention's ``GatedLinearAttention`` layer (same seed -> same weights, state dicts both ways,
outputs and gradients).

fla's layer runs its ``fused_recurrent_gla`` kernel for inputs of up to 64 tokens, which the interpreter runs;
its ``chunk_gla`` kernel (longer inputs) does not run in the interpreter (a GPU check, docs/mamba2-gla.md).
"""
import pytest
import torch
import torch.nn.functional as F

import ops
from ops.testing import packed_seq_idx
from tests.peers import cpu_peers
from tests.peers.grads import assert_modules_agree, assert_same_outputs_and_grads, outputs_and_grads
from zoo.blocks.gla import GatedLinearAttention


def _gla_inputs(B=2, T=29, H=2, K=8, V=6, seed=0, with_initial_state=True):
    gen = torch.Generator().manual_seed(seed)
    inputs = dict(q=torch.randn(B, T, H, K, generator=gen), k=torch.randn(B, T, H, K, generator=gen),
                  v=torch.randn(B, T, H, V, generator=gen),
                  g=F.logsigmoid(torch.randn(B, T, H, K, generator=gen) + 1))
    if with_initial_state:
        inputs["initial_state"] = torch.randn(B, H, K, V, generator=gen)
    return inputs, torch.randn(B, T, H, V, generator=gen)


@pytest.mark.parametrize("with_initial_state", [True, False])
def test_gla_matches_naive_recurrent_gla(with_initial_state):
    naive = cpu_peers.fla_module("fla.ops.gla.naive").naive_recurrent_gla
    inputs, grad_out = _gla_inputs(with_initial_state=with_initial_state)
    want = outputs_and_grads(lambda g, **kw: naive(gk=g, **kw, output_final_state=True), inputs, grad_out)
    got = outputs_and_grads(lambda **kw: ops.gla(**kw, output_final_state=True, backend="reference"), inputs,
                            grad_out)
    assert_same_outputs_and_grads(got, want, ("o", "final state"))


@pytest.mark.parametrize("packed", [False, True], ids=["rows", "packed"])
def test_fla_fused_recurrent_kernel_through_our_adapter_matches_the_reference(packed, monkeypatch):
    """fla's kernel in the interpreter, called as the "fla" backend calls it: packed rows go in as cu_seqlens with
    an initial state per document, and come back as each row's last document's state."""
    cpu_peers.fla_module("fla.ops.gla")
    cpu_peers.first_autotune_config(monkeypatch)
    from ops.gla.fla import gla_fla
    inputs, grad_out = _gla_inputs(T=21)
    seq_idx = packed_seq_idx(21, [0, 6, 7], [0, 15]) if packed else None
    want = outputs_and_grads(lambda **kw: ops.gla(**kw, output_final_state=True, seq_idx=seq_idx), inputs, grad_out)
    got = outputs_and_grads(lambda **kw: gla_fla(**kw, output_final_state=True, seq_idx=seq_idx, recurrent=True),
                            inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o", "final state"))


LAYER_CONFIGS = [
    dict(num_heads=2),
    dict(num_heads=4, num_kv_heads=2, expand_k=1.0, use_short_conv=True, conv_size=3, conv_bias=True),
    dict(num_heads=2, fuse_norm=False, gate_logit_normalizer=8, gate_low_rank_dim=4, clamp_min=-1.0),
]


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_block_matches_fla_layer_with_state_dicts_both_ways(config, monkeypatch):
    layer = cpu_peers.fla_layer("fla.layers.gla")
    cpu_peers.first_autotune_config(monkeypatch)
    d_model = 32
    torch.manual_seed(0)
    theirs = layer.GatedLinearAttention(hidden_size=d_model, **config)
    torch.manual_seed(0)
    same_seed = GatedLinearAttention(d_model, backend="reference", **config)
    assert list(same_seed.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(same_seed.state_dict()[name], value, rtol=0, atol=0, msg=name)

    torch.manual_seed(5)
    mine = GatedLinearAttention(d_model, backend="reference", **config)
    mine.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, d_model, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)
    torch.manual_seed(3)
    theirs_again = layer.GatedLinearAttention(hidden_size=d_model, **config)
    assert_modules_agree(theirs, mine, x, grad_out, theirs_again, unwrap=lambda out: out[0])

"""Against mamba-ssm's own code, on CPU: ``ops.ssd`` against its ``ssd_chunk_scan_combined_ref`` and its
``ssd_minimal_discrete`` (the paper's listing, with initial states), and the Mamba2 block against mamba-ssm's
``Mamba2`` (same seed -> same weights, state dicts both ways, outputs, gradients, decode steps).

mamba-ssm's Mamba2 runs its non-fused path here with its own PyTorch references in place of its Triton scan and
gated norm (see cpu_peers.py); those references take no initial state or seq_idx and whole chunks only, so the
lengths here are multiples of the chunk. Its Triton kernels themselves need a GPU (docs/mamba2-gla.md).
"""
import pytest
import torch

import ops
from ops.testing import assert_close
from tests.peers import cpu_peers
from tests.peers.grads import (assert_modules_agree, assert_same_outputs_and_grads, decode_through_both,
                               outputs_and_grads)
from zoo.blocks.mamba2 import Mamba2

MODULE_CONFIGS = [
    dict(d_model=32, d_state=8, headdim=16, chunk_size=8),
    dict(d_model=24, d_state=4, headdim=12, ngroups=2, d_ssm=24, expand=2, D_has_hdim=True, norm_before_gate=True,
         bias=True, conv_init=0.5, A_init_range=(2, 4), d_conv=3, chunk_size=8),
    dict(d_model=16, d_state=4, headdim=8, rmsnorm=False, conv_bias=False, chunk_size=8),
]


def _config_id(config):
    return "-".join(f"{k}={v}" for k, v in config.items() if k != "d_model")


def _pair(config, seed=0):
    mamba2, _ = cpu_peers.mamba_ssm_mamba2()
    torch.manual_seed(seed)
    theirs = mamba2.Mamba2(**config, use_mem_eff_path=False, layer_idx=0)
    torch.manual_seed(seed)
    return theirs, Mamba2(**config, backend="reference")


@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=_config_id)
def test_same_seed_draws_the_same_weights(config):
    theirs, mine = _pair(config)
    theirs_state, my_state = theirs.state_dict(), mine.state_dict()
    assert list(my_state) == list(theirs_state)
    for name, value in theirs_state.items():
        torch.testing.assert_close(my_state[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=_config_id)
def test_outputs_and_gradients_with_weights_copied_both_ways(config):
    theirs, _ = _pair(config, seed=0)
    _, mine = _pair(config, seed=7)                     # different weights until copied
    mine.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, config["d_model"], generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)
    assert_modules_agree(theirs, mine, x, grad_out, theirs_again=_pair(config, seed=3)[0])


def test_decode_steps_match_mamba_ssm_step():
    theirs, mine = _pair(MODULE_CONFIGS[0])
    x = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(2))
    my_steps, theirs_steps, cache, ssm_state = decode_through_both(theirs, mine, x)
    assert_close("decode", my_steps, theirs_steps, torch.float32)
    assert_close("ssm state", cache["ssm"], ssm_state, torch.float32)


def _ssd_inputs(b=2, length=32, h=4, p=3, g=2, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(b, length, h, p, generator=gen), dt=torch.randn(b, length, h, generator=gen) * 0.5,
                A=-(torch.rand(h, generator=gen) * 2 + 0.2), B=torch.randn(b, length, g, n, generator=gen),
                C=torch.randn(b, length, g, n, generator=gen), D=torch.randn(h, p, generator=gen),
                z=torch.randn(b, length, h, p, generator=gen), dt_bias=torch.randn(h, generator=gen) * 0.3)


@pytest.mark.parametrize("options", [("D", "z", "dt_bias"), ()], ids=lambda o: "+".join(o) or "plain")
def test_ssd_matches_ssd_chunk_scan_combined_ref(options):
    _, combined = cpu_peers.mamba_ssm_mamba2()
    tensors = _ssd_inputs()
    if not options:
        tensors["dt"] = tensors["dt"].abs()  # without softplus, dt is used as it is
    args = {k: v for k, v in tensors.items() if k in ("x", "dt", "A", "B", "C", *options)}
    softplus = bool(options)
    grad_out = torch.randn(tensors["x"].shape, generator=torch.Generator().manual_seed(9))
    want = outputs_and_grads(
        lambda **kw: combined.ssd_chunk_scan_combined_ref(**kw, chunk_size=8, dt_softplus=softplus), args, grad_out)
    got = outputs_and_grads(lambda **kw: ops.ssd(**kw, chunk_size=16, dt_softplus=softplus), args, grad_out)
    assert_same_outputs_and_grads(got, want, ("y",))


def test_ssd_matches_ssd_minimal_discrete_with_initial_states():
    """The paper's listing takes the discretised inputs: X = x dt, A = dt A per step, B and C per head."""
    cpu_peers.mamba_ssm_mamba2()
    ssd_minimal_discrete = __import__("mamba_ssm.modules.ssd_minimal", fromlist=["x"]).ssd_minimal_discrete
    tensors = _ssd_inputs(g=4)
    dt = tensors["dt"].abs() + 0.05
    initial = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(4))
    Y, final = ssd_minimal_discrete(tensors["x"] * dt[..., None], dt * tensors["A"], tensors["B"], tensors["C"],
                                    block_len=8, initial_states=initial[:, None])
    y, my_final = ops.ssd(tensors["x"], dt, tensors["A"], tensors["B"], tensors["C"], chunk_size=16,
                          initial_states=initial, return_final_states=True)
    assert_close("y", y, Y, torch.float32)
    assert_close("final state", my_final, final, torch.float32)

"""Against mamba-ssm's and causal-conv1d's own code, on CPU: the Mamba module (same seed -> same weights, state
dicts both ways, outputs, gradients, decode steps) and ``ops.selective_scan`` / ``ops.causal_conv1d`` against
their ``selective_scan_ref`` / ``causal_conv1d_ref`` in every layout and option we claim.

mamba-ssm's module runs its non-fused path with its own reference scan here (see cpu_peers.py); the CUDA
kernels themselves are compared on a GPU in tests/blocks/test_mamba.py and tests/ops/test_selective_scan.py.
"""
import pytest
import torch

import ops
from ops.testing import assert_close
from tests.peers import cpu_peers
from tests.peers.grads import (assert_modules_agree, assert_same_outputs_and_grads, decode_through_both,
                               outputs_and_grads)
from zoo.blocks.mamba import Mamba

MODULE_CONFIGS = [
    dict(d_model=24, d_state=8),
    dict(d_model=40, d_state=16, d_conv=3, expand=1, dt_rank=5, bias=True, conv_bias=False),
    dict(d_model=16, d_state=4, d_conv=2, dt_init="constant", dt_scale=2.0, dt_min=0.01, dt_max=0.05),
]


def _pair(config, seed=0):
    """(mamba-ssm's Mamba, ours) each built right after torch.manual_seed(seed)."""
    mamba_simple, _ = cpu_peers.mamba_ssm()
    torch.manual_seed(seed)
    theirs = mamba_simple.Mamba(**config, use_fast_path=False, layer_idx=0)
    torch.manual_seed(seed)
    mine = Mamba(**config, backend="reference")
    return theirs, mine


def _hidden(batch, length, d_model, seed=1):
    return torch.randn(batch, length, d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=lambda c: f"d{c['d_model']}_n{c['d_state']}")
def test_same_seed_draws_the_same_weights(config):
    theirs, mine = _pair(config)
    theirs_state, my_state = theirs.state_dict(), mine.state_dict()
    assert list(my_state) == list(theirs_state)
    for name, value in theirs_state.items():
        assert my_state[name].shape == value.shape, name
        torch.testing.assert_close(my_state[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=lambda c: f"d{c['d_model']}_n{c['d_state']}")
def test_outputs_and_gradients_with_weights_copied_both_ways(config):
    theirs, _ = _pair(config, seed=0)
    _, mine = _pair(config, seed=7)                     # different weights until copied
    mine.load_state_dict(theirs.state_dict())
    x = _hidden(2, 37, config["d_model"])
    grad_out = _hidden(2, 37, config["d_model"], seed=2)
    assert_modules_agree(theirs, mine, x, grad_out, theirs_again=_pair(config, seed=3)[0])


def test_decode_steps_match_mamba_ssm_step():
    config = MODULE_CONFIGS[0]
    theirs, mine = _pair(config)
    x = _hidden(3, 20, config["d_model"])
    my_steps, theirs_steps, cache, ssm_state = decode_through_both(theirs, mine, x)
    assert_close("decode", my_steps, theirs_steps, torch.float32)
    assert_close("ssm state", cache["ssm"], ssm_state, torch.float32)
    with torch.no_grad():
        assert_close("decode vs their parallel forward", my_steps, theirs(x), torch.float32)


# ---- the op -------------------------------------------------------------------------------------------------
def _scan_inputs(layout, batch=2, dim=12, length=45, N=6, groups=3, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale)

    u, z = randn(batch, dim, length), randn(batch, dim, length)
    delta = randn(batch, dim, length, scale=0.5)
    A = -torch.rand(dim, N, generator=gen) * 2 - 0.1
    bc_shape = {"time_invariant": (dim, N), "variable": (batch, N, length), "grouped": (batch, groups, N, length)}
    B, C = randn(*bc_shape[layout]), randn(*bc_shape[layout])
    D, delta_bias = randn(dim), randn(dim, scale=0.3)
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


OPTIONS = [
    dict(),
    dict(D=True, z=True, delta_bias=True, delta_softplus=True),
    dict(D=True, delta_softplus=True),
    dict(z=True, delta_bias=True),
]


def _option_id(options: dict) -> str:
    return "+".join(options) or "plain"


# Triton runs in the interpreter here (slow): against the peer it takes every option off and every option on;
# the mixed sets run on the reference and the CPU kernel ("auto"), and Triton meets them against our reference
# in tests/ops/test_selective_scan.py
SCAN_CASES = [pytest.param(backend, layout, options, id=f"{_option_id(options)}-{layout}-{backend}")
              for backend in ("reference", "triton", "auto")
              for layout in ("time_invariant", "variable", "grouped")
              for options in (OPTIONS[:2] if backend == "triton" else OPTIONS)]


@pytest.mark.parametrize("backend, layout, options", SCAN_CASES)
def test_selective_scan_matches_selective_scan_ref(backend, layout, options):
    _, interface = cpu_peers.mamba_ssm()
    tensors = _scan_inputs(layout)
    optional = ("D", "z", "delta_bias")
    args = {k: v for k, v in tensors.items() if k not in optional or options.get(k)}
    flags = dict(delta_softplus=options.get("delta_softplus", False), return_last_state=True)
    grad_out = torch.randn(tensors["u"].shape, generator=torch.Generator().manual_seed(9))
    want = outputs_and_grads(lambda **kw: interface.selective_scan_ref(**kw, **flags), args, grad_out)
    got = outputs_and_grads(lambda **kw: ops.selective_scan(**kw, **flags, backend=backend), args, grad_out)
    assert_same_outputs_and_grads(got, want, ("out", "last state"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_selective_scan_low_precision_inputs_match_selective_scan_ref(dtype):
    _, interface = cpu_peers.mamba_ssm()
    tensors = _scan_inputs("variable")
    cast = {k: (v if k in ("A", "D", "delta_bias") else v.to(dtype)) for k, v in tensors.items()}  # mamba-ssm's dtypes
    want = interface.selective_scan_ref(**cast, delta_softplus=True)
    got = ops.selective_scan(**cast, delta_softplus=True, backend="reference")
    assert got.dtype == want.dtype == dtype
    assert_close("out", got.float(), want.float(), dtype)


# ---- causal conv1d ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("with_initial_states", [True, False])
@pytest.mark.parametrize("width", [2, 4])
def test_causal_conv1d_matches_causal_conv1d_ref(activation, with_bias, with_initial_states, width):
    causal_conv1d_ref = cpu_peers.causal_conv1d_ref()
    gen = torch.Generator().manual_seed(0)
    batch, dim, length = 2, 10, 23
    args = dict(x=torch.randn(batch, dim, length, generator=gen), weight=torch.randn(dim, width, generator=gen))
    if with_bias:
        args["bias"] = torch.randn(dim, generator=gen)
    if with_initial_states:
        args["initial_states"] = torch.randn(batch, dim, width - 1, generator=gen)
    grad_out = torch.randn(batch, dim, length, generator=gen)
    options = dict(return_final_states=True, activation=activation)
    want = outputs_and_grads(lambda **kw: causal_conv1d_ref(**kw, **options), args, grad_out)
    got = outputs_and_grads(lambda **kw: ops.causal_conv1d(**kw, **options), args, grad_out)
    assert_same_outputs_and_grads(got, want, ("out", "final states"))

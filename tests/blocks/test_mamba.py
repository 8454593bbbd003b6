"""The Mamba block: decoding equals the parallel forward, prefill continuation, mamba-ssm compatibility
(parameter names, initialisation, outputs with copied weights), and the Triton path against the reference."""
import math

import pytest
import torch

from ops.testing import assert_close
from zoo.blocks.mamba import Mamba
from zoo.blocks.registry import MIXERS, build_mixer


# mamba_ssm.modules.mamba_simple.Mamba's parameters (bias=False, conv_bias=True) as (name, shape), read from its source
def mamba_ssm_parameter_shapes(d_model, d_state=16, d_conv=4, expand=2):
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    return [
        ("A_log", (d_inner, d_state)), ("D", (d_inner,)),
        ("in_proj.weight", (2 * d_inner, d_model)),
        ("conv1d.weight", (d_inner, 1, d_conv)), ("conv1d.bias", (d_inner,)),
        ("x_proj.weight", (dt_rank + 2 * d_state, d_inner)),
        ("dt_proj.weight", (d_inner, dt_rank)), ("dt_proj.bias", (d_inner,)),
        ("out_proj.weight", (d_model, d_inner)),
    ]


def make(d_model=16, seed=0, **hyper):
    torch.manual_seed(seed)
    return Mamba(d_model, backend=hyper.pop("backend", "reference"), **hyper)


def inputs(batch=2, seq=64, d_model=16, seed=1):
    return torch.randn(batch, seq, d_model, generator=torch.Generator().manual_seed(seed))


def test_registered_under_mamba():
    assert MIXERS["mamba"] is Mamba
    assert isinstance(build_mixer("mamba", 8, layer_idx=3, d_state=4), Mamba)


def test_64_decode_steps_equal_parallel_forward():
    mixer = make(d_state=8)
    x = inputs(seq=64)
    with torch.no_grad():
        expected = mixer(x)
        cache = mixer.allocate_cache(2)
        steps = torch.cat([mixer(x[:, t: t + 1], cache=cache) for t in range(64)], dim=1)
    assert cache.seen == 64
    assert_close("decode", steps, expected, torch.float32)


@pytest.mark.parametrize("splits", [(1, 30), (13, 40), (64, 64)])
def test_prefill_continuation_then_decode(splits):
    """Prefill a prefix, prefill more on top of the filled cache, then decode one token at a time."""
    mixer = make()
    x = inputs(seq=70)
    first, second = splits
    with torch.no_grad():
        expected = mixer(x)
        cache = mixer.allocate_cache(2)
        pieces = [mixer(x[:, :first], cache=cache), mixer(x[:, first:second], cache=cache)]
        pieces += [mixer(x[:, t: t + 1], cache=cache) for t in range(second, 70)]
    pieces = [p for p in pieces if p.shape[1] > 0]
    assert_close("prefill + continuation + decode", torch.cat(pieces, dim=1), expected, torch.float32)


def test_state_size_and_cache_layout():
    mixer = make(d_model=12, d_state=5, d_conv=3, expand=3)
    cache = mixer.allocate_cache(4)
    assert cache["conv"].shape == (4, 36, 2) and cache["ssm"].shape == (4, 36, 5)
    assert mixer.state_size(100) == 36 * (5 + 3 - 1) == cache.numel_per_sequence()


def test_parameter_names_and_shapes_match_mamba_ssm():
    mixer = make(d_model=40)
    mine = sorted((name, tuple(p.shape)) for name, p in mixer.named_parameters())
    assert mine == sorted(mamba_ssm_parameter_shapes(40))


def test_initialisation_follows_mamba_ssm():
    mixer = make(d_model=64, d_state=8, dt_min=0.01, dt_max=0.2)
    n = torch.arange(1, 9, dtype=torch.float32)
    torch.testing.assert_close(mixer.A_log.detach(), torch.log(n).expand(128, 8))
    torch.testing.assert_close(mixer.D.detach(), torch.ones(128))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias.detach())  # inverse softplus undone
    assert dt.min() >= 0.01 * (1 - 1e-4) and dt.max() <= 0.2 * (1 + 1e-4)
    bound = mixer.dt_rank ** -0.5
    assert mixer.dt_proj.weight.abs().max() <= bound
    for param in (mixer.A_log, mixer.D, mixer.dt_proj.bias):
        assert getattr(param, "_no_weight_decay", False)
    assert getattr(mixer.dt_proj.bias, "_no_reinit", False)


def test_state_dict_round_trip_gives_same_outputs():
    source, target = make(seed=0), make(seed=5)
    target.load_state_dict(source.state_dict())
    x = inputs(seq=9)
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("bad", [{"d_state": 0}, {"d_conv": -1}, {"expand": 0}, {"dt_rank": 1.5},
                                 {"dt_init": "uniform"}, {"dt_min": 0.5}, {"dt_init_floor": -1.0}])
def test_bad_hyperparameters_raise_value_error(bad):
    with pytest.raises(ValueError) as error:
        Mamba(16, **bad)
    assert str(list(bad.values())[0]) in str(error.value)


def test_triton_backend_matches_reference(triton_device):
    """The whole block at tiny size with the Triton scan (the GPU, or the interpreter on CPU) against the reference
    block on the CPU: outputs, cache and gradients."""
    reference = make(d_model=8, d_state=4)
    fused = make(d_model=8, d_state=4, backend="triton").to(triton_device)
    fused.load_state_dict(reference.state_dict())
    x = inputs(batch=2, seq=37, d_model=8)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    outs = {}
    for name, mixer, device in (("reference", reference, "cpu"), ("triton", fused, triton_device)):
        cache = mixer.allocate_cache(2, device=device)
        xd = x.to(device)
        head = mixer(xd[:, :20], cache=cache)
        tail = mixer(xd[:, 20:], cache=cache)          # continuation: initial state through the kernel
        y = torch.cat([head, tail], dim=1)
        (y * weights.to(device)).sum().backward()
        outs[name] = (y.detach().cpu(), cache["ssm"].cpu(), cache["conv"].cpu())
    for label, a, b in zip(("out", "ssm state", "conv state"), outs["triton"], outs["reference"]):
        assert_close(label, a, b, torch.float32)
    for (name, p_ref), p_fused in zip(reference.named_parameters(), fused.parameters()):
        assert_close(f"grad {name}", p_fused.grad.cpu(), p_ref.grad, torch.float32)


def _mamba_ssm_class():
    if not torch.cuda.is_available():
        pytest.skip("parity with mamba_ssm needs CUDA")
    mamba_simple = pytest.importorskip("mamba_ssm.modules.mamba_simple", reason="mamba_ssm is not installed")
    return mamba_simple.Mamba


def test_parameter_names_equal_mamba_ssm_module():
    theirs = _mamba_ssm_class()(d_model=40)
    mine = make(d_model=40)
    # same names, shapes and registration order (so state dicts list the same keys in the same order)
    assert [(n, p.shape) for n, p in mine.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]


@pytest.mark.parametrize("backend", ["triton", "cuda", "reference"])
def test_parity_with_mamba_ssm(backend):
    MambaSSM = _mamba_ssm_class()
    if backend == "cuda":
        pytest.importorskip("causal_conv1d", reason="backend='cuda' also needs causal_conv1d")
    torch.manual_seed(0)
    theirs = MambaSSM(d_model=64, layer_idx=0).cuda()
    mine = Mamba(64, backend=backend).cuda()
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 300, 64, device="cuda")
    assert_close("out vs mamba_ssm", mine(x), theirs(x), torch.float32, scale=5)
    theirs_back = MambaSSM(d_model=64, layer_idx=0).cuda()
    theirs_back.load_state_dict(mine.state_dict())
    assert_close("mamba_ssm with our weights", theirs_back(x), mine(x), torch.float32, scale=5)

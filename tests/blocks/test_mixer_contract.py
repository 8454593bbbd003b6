"""The mixer contract, checked for every registered mixer (a new block is covered by registering it)."""
import pytest
import torch

from ops.testing import assert_close
from tests.blocks.mixer_cases import D_MODEL, case_id, mixer_cases
from zoo.blocks.registry import MIXERS, build_mixer

CASES = mixer_cases()


def make(case, seed=0, dtype=torch.float32):
    name, hyper = case
    torch.manual_seed(seed)
    return build_mixer(name, D_MODEL, layer_idx=0, backend="reference", **hyper).to(dtype)


def inputs(batch=2, seq=13, seed=1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq, D_MODEL, generator=generator).to(dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_shape_and_dtype_preserved(case):
    mixer = make(case)
    for batch, seq in [(1, 1), (3, 7)]:
        y = mixer(inputs(batch, seq))
        assert y.shape == (batch, seq, D_MODEL)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_causal(case):
    """Changing tokens after t leaves every output up to t unchanged, and does change later outputs."""
    mixer = make(case)
    x = inputs(seq=16)
    y = mixer(x)
    for t in (0, 5, 11):
        changed = x.clone()
        changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:])
        y_changed = mixer(changed)
        torch.testing.assert_close(y_changed[:, : t + 1], y[:, : t + 1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(y_changed[:, t + 1:], y[:, t + 1:]), "later outputs ignore the input"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_token_by_token_decode_equals_parallel_forward(case, dtype):
    mixer = make(case, dtype=dtype)
    x = inputs(seq=17, dtype=dtype)
    with torch.no_grad():
        expected = mixer(x)
        cache = mixer.allocate_cache(x.shape[0], device=x.device, dtype=dtype)
        steps = [mixer(x[:, t: t + 1], cache=cache) for t in range(x.shape[1])]
    assert cache.seen == x.shape[1]
    assert expected.dtype == dtype and all(step.dtype == dtype for step in steps), "the model's dtype is kept"
    # bf16: each path rounds differently, so the bound scales with the dtype (and is checked, never skipped)
    assert_close("decode", torch.cat(steps, dim=1).float(), expected.float(), dtype, scale=2.0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_prefill_then_decode_equals_parallel_forward(case):
    mixer = make(case)
    x = inputs(seq=20)
    with torch.no_grad():
        expected = mixer(x)
        cache = mixer.allocate_cache(x.shape[0])
        pieces = [mixer(x[:, :7], cache=cache), mixer(x[:, 7:12], cache=cache)]
        pieces += [mixer(x[:, t: t + 1], cache=cache) for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_size_is_what_the_cache_holds(case):
    mixer = make(case)
    for seq in (1, 4, 19):
        cache = mixer.allocate_cache(2)
        with torch.no_grad():
            mixer(inputs(batch=2, seq=seq), cache=cache)
        assert cache.numel_per_sequence() == mixer.state_size(seq), f"after {seq} tokens"
        assert mixer.state_size(seq) > 0


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_reach_every_parameter(case):
    mixer = make(case)
    x = inputs(seq=11).requires_grad_()
    weights = torch.randn(x.shape)
    (mixer(x) * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in mixer.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("name", sorted(MIXERS))
@pytest.mark.parametrize("bad", [{"d_model": 0}, {"d_model": -8}, {"d_model": 2.5}, {"backend": "fastest"}],
                         ids=lambda bad: ",".join(f"{k}={v}" for k, v in bad.items()))
def test_bad_constructor_arguments_raise_value_error(name, bad):
    arguments = {"d_model": D_MODEL, **bad}
    with pytest.raises(ValueError) as error:
        MIXERS[name](**arguments)
    assert str(list(bad.values())[0]) in str(error.value), "the message names the bad value"


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_unknown_hyperparameter_is_rejected(name):
    with pytest.raises(TypeError):
        MIXERS[name](D_MODEL, not_a_hyperparameter=3)


# on a CPU only the Triton paths that the interpreter runs; on a GPU every one (attention's flex_attention too)
TRITON_CASES = [case for case in CASES if "triton" in MIXERS[case[0]].backends
                and (torch.cuda.is_available() or MIXERS[case[0]].triton_runs_in_interpreter)]


@pytest.mark.parametrize("case", TRITON_CASES, ids=case_id)
def test_triton_backend_matches_reference_backend(case, triton_device):
    """Same weights, both paths: outputs and every gradient agree (Triton on the GPU, or in its interpreter on CPU;
    the reference on the CPU)."""
    name, hyper = case
    reference = make(case)
    torch.manual_seed(0)
    fused = build_mixer(name, D_MODEL, layer_idx=0, backend="triton", **hyper).to(triton_device)
    fused.load_state_dict(reference.state_dict())
    x = inputs(seq=9)
    weights = torch.randn(x.shape)
    results = []
    for mixer, device in ((reference, torch.device("cpu")), (fused, triton_device)):
        xi = x.clone().to(device).requires_grad_()
        (mixer(xi) * weights.to(device)).sum().backward()
        with torch.no_grad():
            y = mixer(x.to(device)).cpu()
        results.append((y, xi.grad.cpu(), {n: p.grad.cpu() for n, p in mixer.named_parameters()}))
    (y_ref, dx_ref, grads_ref), (y, dx, grads) = results
    assert_close("output", y, y_ref, torch.float32)
    assert_close("input grad", dx, dx_ref, torch.float32)
    for param_name, grad in grads.items():
        assert_close(f"grad of {param_name}", grad, grads_ref[param_name], torch.float32)

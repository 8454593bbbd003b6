"""Causal depthwise conv1d: the reference against nn.Conv1d, continuation from a state, the one-step update."""
import pytest
import torch
import torch.nn.functional as F

from ops.causal_conv1d import causal_conv1d
from ops.causal_conv1d.reference import causal_conv1d_step
from ops.testing import assert_close


def conv_module_output(x, weight, bias, activation):
    """Conv1d padded by W-1 on both sides, cut to the first L outputs: how mamba_ssm's nn.Conv1d path computes it."""
    dim, width = weight.shape
    out = F.conv1d(x, weight[:, None, :], bias, padding=width - 1, groups=dim)[..., : x.shape[-1]]
    return F.silu(out) if activation else out


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_padded_conv1d(width, activation, with_bias):
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 5, 11, generator=g), torch.randn(5, width, generator=g)
    bias = torch.randn(5, generator=g) if with_bias else None
    out = causal_conv1d(x, weight, bias, activation=activation, backend="reference")
    assert_close("out", out, conv_module_output(x, weight, bias, activation), torch.float32)


def test_gradients_match_padded_conv1d():
    g = torch.Generator().manual_seed(1)
    x, weight, bias = torch.randn(2, 3, 9, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    mine = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    theirs = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    w = torch.randn(2, 3, 9, generator=g)
    (causal_conv1d(*mine, activation="silu", backend="reference") * w).sum().backward()
    (conv_module_output(*theirs, "silu") * w).sum().backward()
    for name, a, b in zip(("x", "weight", "bias"), mine, theirs):
        assert_close(f"grad {name}", a.grad, b.grad, torch.float32)


@pytest.mark.parametrize("split", [1, 2, 7])
def test_continuation_and_steps_equal_one_pass(split):
    """Prefill a prefix, continue from its final state, then step token by token: equals one pass."""
    g = torch.Generator().manual_seed(2)
    x, weight, bias = torch.randn(2, 4, 12, generator=g), torch.randn(4, 4, generator=g), torch.randn(4, generator=g)
    full = causal_conv1d(x, weight, bias, activation="silu")
    head, state = causal_conv1d(x[..., :split], weight, bias, activation="silu", return_final_states=True)
    assert state.shape == (2, 4, 3)
    mid, state = causal_conv1d(x[..., split:9], weight, bias, initial_states=state, return_final_states=True,
                               activation="silu")
    assert mid.shape[-1] == 9 - split
    steps = [causal_conv1d_step(state, x[..., t], weight, bias, activation="silu") for t in range(9, 12)]
    pieces = torch.cat([head, mid, torch.stack(steps, -1)], -1)
    assert_close("prefill + continuation + steps", pieces, full, torch.float32)


def test_public_name_in_ops_dispatches():
    import ops
    x, weight = torch.randn(1, 2, 5), torch.randn(2, 3)
    torch.testing.assert_close(ops.causal_conv1d(x, weight, activation="silu"), conv_module_output(x, weight, None, "silu"))


def test_final_states_out_is_filled_in_place():
    x, weight = torch.randn(2, 3, 6), torch.randn(3, 4)
    buffer = torch.full((2, 3, 3), float("nan"))
    _, final = causal_conv1d(x, weight, return_final_states=True, final_states_out=buffer)
    assert final is buffer
    torch.testing.assert_close(buffer, x[..., -3:])


def test_bad_activation_is_rejected():
    with pytest.raises(ValueError, match="relu"):
        causal_conv1d(torch.zeros(1, 2, 3), torch.zeros(2, 2), activation="relu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="causal_conv1d parity needs CUDA")
def test_cuda_backend_matches_reference():
    pytest.importorskip("causal_conv1d", reason="causal_conv1d is not installed")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 100, generator=g).cuda()
    weight, bias = torch.randn(64, 4, generator=g).cuda(), torch.randn(64, generator=g).cuda()
    state = torch.randn(2, 64, 3, generator=g).cuda()
    out, final = causal_conv1d(x, weight, bias, initial_states=state, return_final_states=True,
                               activation="silu", backend="cuda")
    expected, expected_final = causal_conv1d(x, weight, bias, initial_states=state, return_final_states=True,
                                             activation="silu", backend="reference")
    assert_close("out", out, expected, torch.float32)
    assert_close("final state", final, expected_final, torch.float32)


# ---- the CPU path (shifted.py) against the reference ---------------------------------------------------------
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_initial_states", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_shifted_matches_reference_with_gradients(width, activation, with_bias, with_initial_states, dtype):
    from ops.causal_conv1d.reference import causal_conv1d as reference_conv
    from ops.causal_conv1d.shifted import causal_conv1d as shifted_conv
    g = torch.Generator().manual_seed(width)
    tensors = {"x": torch.randn(3, 5, 13, generator=g).to(dtype), "weight": torch.randn(5, width, generator=g),
               "bias": torch.randn(5, generator=g) if with_bias else None,
               "initial_states": torch.randn(3, 5, width - 1, generator=g).to(dtype) if with_initial_states else None}
    weights = torch.randn(3, 5, 13, generator=g), torch.randn(3, 5, width - 1, generator=g)
    results = []
    for conv in (shifted_conv, reference_conv):
        leaves = {k: None if v is None else v.clone().requires_grad_(True) for k, v in tensors.items()}
        out, final = conv(**leaves, return_final_states=True, activation=activation)
        ((out.float() * weights[0]).sum() + (final.float() * weights[1]).sum()).backward()
        results.append({"out": out, "final states": final,
                        **{f"d {k}": v.grad for k, v in leaves.items() if v is not None}})
    for name, want in results[1].items():
        assert results[0][name].dtype == want.dtype
        assert_close(name, results[0][name].float(), want.float(), dtype)


def test_auto_uses_the_shifted_path_on_cpu(monkeypatch):
    """Where the compiled kernel (cpu.py) does not apply: continuing from initial states, or without it."""
    import importlib
    shifted = importlib.import_module("ops.causal_conv1d.shifted")
    calls = []
    original = shifted.causal_conv1d
    monkeypatch.setattr(shifted, "causal_conv1d", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    x, weight = torch.randn(1, 2, 5), torch.randn(2, 4)
    causal_conv1d(x, weight, initial_states=torch.zeros(1, 2, 3), backend="auto")
    assert calls == [1]
    monkeypatch.setenv("ZOO_NATIVE", "0")
    causal_conv1d(x, weight, backend="auto")
    assert calls == [1, 1]
    causal_conv1d(x, weight, backend="reference")
    assert calls == [1, 1]

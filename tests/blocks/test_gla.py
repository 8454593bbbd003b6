"""GatedLinearAttention specifics (the generic contract and packing tests cover the rest): hyperparameter errors,
state size, the backend choice on CPU, strong gates staying finite, and on a GPU the "fla" path (fla's kernels)
against the reference, prefill continuation and decode included."""
import pytest
import torch

from tests.blocks.backend_parity import assert_backend_matches_reference
from zoo.blocks.gla import GatedLinearAttention


@pytest.mark.parametrize("bad, message", [
    (dict(num_heads=3), r"d_model \* expand_k = 16.0 must be an integer divisible by num_heads=3"),
    (dict(num_kv_heads=3), "num_kv_heads=3 must divide num_heads=4"),
    (dict(expand_v=0), "expand_v must be a positive number, got 0"),
    (dict(mode="parallel"), "mode='parallel' is not one of"),
    (dict(feature_map="tanh"), "feature_map='tanh' is not one of"),
    (dict(gate_fn="relu"), "gate_fn='relu' is not one of"),
    (dict(backend="cuda"), "backend 'cuda' is not offered"),
])
def test_bad_hyperparameters_name_themselves(bad, message):
    with pytest.raises(ValueError, match=message):
        GatedLinearAttention(**{"d_model": 32, **bad})


def test_state_size_counts_the_heads_states_and_the_conv_windows():
    mixer = GatedLinearAttention(64, num_heads=4, num_kv_heads=2, use_short_conv=True, conv_size=4)
    key_dim, value_dim = 32, 64
    assert mixer.state_size(10) == 4 * (key_dim // 4) * (value_dim // 4) + (key_dim + key_dim // 2 + value_dim // 2) * 3
    assert GatedLinearAttention(64).state_size(10) == 4 * 8 * 16


def test_auto_runs_the_reference_on_cpu_and_fla_needs_a_gpu():
    x = torch.randn(1, 5, 32)
    torch.manual_seed(0)
    auto = GatedLinearAttention(32)
    torch.manual_seed(0)
    torch.testing.assert_close(auto(x), GatedLinearAttention(32, backend="reference")(x))
    with pytest.raises(ValueError, match="backend='fla' needs a CUDA device"):
        GatedLinearAttention(32, backend="fla")(x)


def test_saturated_gates_stay_finite():
    """gate_logit_normalizer 1e-3 sends the log decays to ~-1e3 per step: values and gradients stay finite."""
    mixer = GatedLinearAttention(32, gate_logit_normalizer=1e-3)
    x = torch.randn(2, 40, 32, requires_grad=True)
    y = mixer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters())


@pytest.mark.parametrize("config", [dict(), dict(use_short_conv=True, num_kv_heads=2)], ids=["default", "conv-gqa"])
def test_fla_backend_matches_the_reference_with_prefill_and_decode(config):
    if not torch.cuda.is_available():
        pytest.skip("fla's kernels need CUDA")
    pytest.importorskip("fla", reason="fla-core is not installed")
    torch.manual_seed(0)
    reference = GatedLinearAttention(64, backend="reference", **config).cuda()
    fused = GatedLinearAttention(64, backend="fla", **config).cuda()
    assert_backend_matches_reference(reference, fused, "state")

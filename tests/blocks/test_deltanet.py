"""DeltaNet and GatedDeltaNet specifics (the generic contract and packing tests cover the rest): the state size's
closed form, the backends offered, and one-line errors for bad hyperparameters."""
import pytest
import torch

from zoo.blocks import DeltaNet, GatedDeltaNet


@pytest.mark.parametrize("hyper,heads,k,v,conv_channels", [
    (dict(num_heads=4), 4, 8, 8, 32 + 32 + 32),
    (dict(num_heads=2, expand_k=0.5, expand_v=2, conv_size=3), 2, 8, 32, 16 + 16 + 64),
    (dict(num_heads=2, use_short_conv=False), 2, 16, 16, 0),
])
def test_deltanet_state_is_heads_k_v_plus_the_short_convs(hyper, heads, k, v, conv_channels):
    block = DeltaNet(32, **hyper)
    conv_size = hyper.get("conv_size", 4)
    assert block.state_size(100) == heads * k * v + conv_channels * (conv_size - 1)
    assert block.allocate_cache(3).numel_per_sequence() == block.state_size(0)


def test_gated_deltanet_state_counts_every_value_head():
    block = GatedDeltaNet(32, num_heads=2, num_v_heads=4, head_dim=8, expand_v=2)
    # 4 value heads of 16, keys of 8; convs over q, k (2 * 8 each) and v (4 * 16), width 4
    assert block.state_size(7) == 4 * 8 * 16 + (16 + 16 + 64) * 3


def test_fla_defaults_and_parameter_names():
    block = GatedDeltaNet(2048)
    assert (block.num_heads, block.head_dim, block.head_v_dim, block.conv_size) == (6, 256, 512, 4)
    assert {"q_proj.weight", "a_proj.weight", "b_proj.weight", "A_log", "dt_bias", "q_conv1d.weight",
            "g_proj.weight", "o_norm.weight", "o_proj.weight"} == set(dict(block.named_parameters())) - {
        "k_proj.weight", "v_proj.weight", "k_conv1d.weight", "v_conv1d.weight"}
    delta = DeltaNet(64)
    assert (delta.num_heads, delta.head_k_dim, delta.use_gate, delta.qk_norm) == (4, 16, False, "l2")
    assert not hasattr(delta, "g_proj") and delta.o_norm.weight.dtype == torch.float32


@pytest.mark.parametrize("cls,hyper,named", [
    (DeltaNet, dict(num_heads=3), "num_heads=3"),
    (DeltaNet, dict(qk_activation="gelu"), "'gelu'"),
    (DeltaNet, dict(qk_norm="l1"), "'l1'"),
    (DeltaNet, dict(expand_k=0.3), "expand_k = 9.6"),
    (GatedDeltaNet, dict(num_heads=2, num_v_heads=3), "num_v_heads=3"),
    (GatedDeltaNet, dict(head_dim=5, expand_v=0.5), "head_dim * expand_v = 2.5"),
    (GatedDeltaNet, dict(output_gate_activation="relu"), "'relu'"),
    (GatedDeltaNet, dict(conv_size=0), "conv_size"),
])
def test_bad_hyperparameters_are_named_in_one_line(cls, hyper, named):
    with pytest.raises(ValueError) as error:
        cls(32, **hyper)
    assert named in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet])
def test_backends_are_auto_reference_and_fla(cls):
    with pytest.raises(ValueError, match="choose one of auto, reference, fla"):
        cls(32, backend="triton")
    block = cls(32, backend="fla", num_heads=2, **({"head_dim": 8} if cls is GatedDeltaNet else {}))
    with pytest.raises(ValueError, match="backend='fla' needs a CUDA device"):
        block(torch.randn(1, 3, 32))

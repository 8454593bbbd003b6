"""BasedLinearAttention: decoding equals the parallel forward, exact state size, fused kernel == reference."""
import pytest
import torch

from ops.testing import assert_close
from zoo.blocks.based import BasedLinearAttention
from zoo.blocks.registry import MIXERS, build_mixer


def _block(seed=0, **hyper):
    torch.manual_seed(seed)
    return BasedLinearAttention(hyper.pop("d_model", 32), **hyper)


def _x(B, T, d, seed=1):
    return torch.randn(B, T, d, generator=torch.Generator().manual_seed(seed))


def test_registered_under_its_config_name():
    assert MIXERS["based_linear_attention"] is BasedLinearAttention
    block = build_mixer("based_linear_attention", 32, layer_idx=2, feature_dim=4, num_heads=2)
    assert (block.feature_dim, block.num_heads, block.head_dim, block.layer_idx) == (4, 2, 16, 2)


@pytest.mark.parametrize("prefill", [0, 1, 7])
def test_decode_equals_parallel_forward(prefill):
    block = _block(feature_dim=4, num_heads=2)
    x = _x(2, 19, 32)
    with torch.no_grad():
        expected = block(x)
        cache = block.allocate_cache(2)
        outs = [block(x[:, :prefill], cache)] if prefill else []
        outs += [block(x[:, t:t + 1], cache) for t in range(prefill, x.shape[1])]
    assert cache.seen == x.shape[1]
    assert_close("decoded", torch.cat(outs, 1), expected, torch.float32)


def test_prefill_in_pieces_equals_parallel_forward():
    block = _block(feature_dim=3, num_heads=4)
    x = _x(1, 150, 32, seed=2)  # pieces longer than one reference chunk (64)
    with torch.no_grad():
        expected = block(x)
        cache = block.allocate_cache(1)
        pieces = [block(x[:, a:b], cache) for a, b in ((0, 70), (70, 71), (71, 150))]
    assert_close("prefill in pieces", torch.cat(pieces, 1), expected, torch.float32)


@pytest.mark.parametrize("feature_dim,num_heads", [(1, 1), (4, 2), (16, 4)])
def test_state_size_is_exact_and_counts_distinct_taylor_features(feature_dim, num_heads):
    d_model = 32
    block = _block(d_model=d_model, feature_dim=feature_dim, num_heads=num_heads)
    features = 1 + feature_dim + feature_dim * (feature_dim + 1) // 2  # symmetric x x^T stored once
    head_dim = d_model // num_heads
    assert block.state_size(0) == block.state_size(1000) == num_heads * features * (head_dim + 1)
    cache = block.allocate_cache(3)
    with torch.no_grad():
        block(_x(3, 5, d_model), cache)
        block(_x(3, 1, d_model, seed=4), cache)
    assert cache.numel_per_sequence() == block.state_size(cache.seen)


def test_state_size_grows_quadratically_with_feature_dim():
    sizes = {f: _block(feature_dim=f).state_size(10) for f in (4, 8, 16)}
    per_feature = 32 + 1  # one head of 32 values plus its k_state entry
    for f, size in sizes.items():
        assert size == per_feature * (f + 1) * (f + 2) // 2
    assert sizes[4] < sizes[8] < sizes[16]


def test_cache_is_float32_for_16_bit_models():
    block = _block()
    cache = block.allocate_cache(2, dtype=torch.bfloat16)
    assert all(t.dtype == torch.float32 for t in cache.values())


@pytest.mark.parametrize("kwargs,match", [
    ({"feature_dim": 0}, "feature_dim"),
    ({"num_heads": 3}, "num_heads=3"),
    ({"num_heads": 2.0}, "num_heads"),
    ({"eps": -1.0}, "eps"),
    ({"backend": "fast"}, "backend"),
    ({"backend": "cuda"}, "'cuda' is not offered"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BasedLinearAttention(32, **kwargs)


def test_triton_block_matches_reference_block(triton_device):
    reference = _block(d_model=32, feature_dim=16, num_heads=2, backend="reference")
    fused = _block(d_model=32, feature_dim=16, num_heads=2, backend="triton").to(triton_device)
    fused.load_state_dict(reference.state_dict())
    x = _x(2, 21, 32)
    outs, grads = [], []
    for block in (fused, reference):
        xi = x.clone().to(block.out_proj.weight.device).requires_grad_()
        y = block(xi)
        y.square().sum().backward()
        outs.append(y.detach().cpu())
        grads.append([t.cpu() for t in [xi.grad] + [p.grad for p in block.parameters()]])
    assert_close("y", outs[0], outs[1], torch.float32)
    for i, (a, e) in enumerate(zip(*grads)):
        assert_close(f"grad {i}", a, e, torch.float32)


@pytest.mark.parametrize("config", ["based", "conv_based"])
def test_model_configs_build_the_linear_attention_layers(config):
    from pathlib import Path

    import yaml
    spec = yaml.safe_load((Path(__file__).parents[2] / "configs" / "model" / f"{config}.yaml").read_text())
    names = [layer["name"] for layer in spec["layers"]]
    assert "short_conv" in names and "based_linear_attention" in names
    for i, layer in enumerate(spec["layers"]):
        if layer["name"] == "based_linear_attention":
            hyper = {key: value for key, value in layer.items() if key != "name"}
            block = build_mixer("based_linear_attention", spec["d_model"], layer_idx=i, **hyper)
            assert block.head_dim * block.num_heads == spec["d_model"]

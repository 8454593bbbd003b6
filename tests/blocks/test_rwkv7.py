"""RWKV-7 specifics (the generic contract and packing tests cover the rest): the value residual through the trunk
and alone, the token shift at document starts, the exact state size, and argument errors."""
import pytest
import torch

from ops.testing import assert_close
from zoo.blocks.rwkv7 import RWKV7, VALUE_RESIDUAL_KEY
from zoo.model import LM

D_MODEL = 32


def test_value_residual_flows_from_the_first_layer_through_the_trunk():
    torch.manual_seed(0)
    model = LM(vocab_size=17, d_model=D_MODEL, n_layers=3, layers=[{"name": "rwkv7", "head_dim": 16}],
               backend="reference")
    first, later = model.layers[0].mixer, model.layers[2].mixer
    assert not hasattr(first, "v_lora") and hasattr(later, "v_lora")
    seen = {}
    later.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    ids = torch.randint(0, 17, (2, 9))
    logits = model(ids)
    assert VALUE_RESIDUAL_KEY in seen["cross_layer"], "the trunk hands the first layer's values on"
    # the later layers' value gates matter: moving them changes the logits
    with torch.no_grad():
        later.v_lora.lora[2].bias.add_(3.0)
    assert not torch.allclose(model(ids), logits)
    # and the first layer's values reach the later layers' gradients
    model.zero_grad()
    model(ids).square().mean().backward()
    assert later.v_lora.lora[2].bias.grad.abs().sum() > 0


def test_trunk_decoding_with_the_value_residual_equals_the_parallel_forward():
    torch.manual_seed(1)
    model = LM(vocab_size=17, d_model=D_MODEL, n_layers=2, layers=[{"name": "rwkv7", "head_dim": 16}],
               backend="reference")
    ids = torch.randint(0, 17, (2, 11))
    with torch.no_grad():
        expected = model(ids)
        caches = model.allocate_cache(2)
        prefill = model(ids[:, :5], caches=caches)
        steps = [model(ids[:, t:t + 1], caches=caches) for t in range(5, 11)]
    assert_close("decode", torch.cat([prefill, *steps], dim=1), expected, torch.float32)


def test_a_later_layer_alone_acts_as_a_first_layer():
    """Without cross_layer (or with an empty one) a block of layer_idx 1 uses its own values, as layer 0 would."""
    torch.manual_seed(2)
    later = RWKV7(D_MODEL, layer_idx=1, head_dim=16, backend="reference")
    first = RWKV7(D_MODEL, layer_idx=0, head_dim=16, backend="reference")
    first.load_state_dict({k: v for k, v in later.state_dict().items() if not k.startswith("v_lora")})
    x = torch.randn(2, 7, D_MODEL)
    channel = {}
    torch.testing.assert_close(later(x), first(x))
    torch.testing.assert_close(later(x, cross_layer=channel), first(x))
    assert channel[VALUE_RESIDUAL_KEY].shape == (2, 7, D_MODEL), "the first RWKV-7 layer publishes its values"
    mixed = later(x, cross_layer={VALUE_RESIDUAL_KEY: torch.randn(2, 7, D_MODEL)})
    assert not torch.allclose(mixed, first(x))


def test_mismatched_first_layer_values_are_named():
    block = RWKV7(D_MODEL, layer_idx=1, head_dim=16, backend="reference")
    with pytest.raises(ValueError, match="same value_dim"):
        block(torch.randn(1, 3, D_MODEL), cross_layer={VALUE_RESIDUAL_KEY: torch.randn(1, 3, 8)})


def test_token_shift_does_not_cross_a_document_boundary():
    """The second document's first token sees a zero previous token, as when it runs alone."""
    torch.manual_seed(3)
    block = RWKV7(D_MODEL, head_dim=16, backend="reference").double()
    x = torch.randn(1, 6, D_MODEL, dtype=torch.float64)
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1]])
    torch.testing.assert_close(block(x, seq_idx=seq_idx)[:, 3:], block(x[:, 3:]))


def test_state_size_is_heads_times_key_times_value_plus_the_shifted_token():
    block = RWKV7(64, head_dim=16, value_dim=128)
    assert block.state_size(100) == 4 * 16 * 32 + 64
    assert RWKV7(D_MODEL).head_dim == D_MODEL, "below d_model 64 the default is one head"


@pytest.mark.parametrize("bad, message", [
    (dict(head_dim=5), "head_dim=5 must divide d_model=32"),
    (dict(num_heads=3), "num_heads=3 must divide d_model=32"),
    (dict(head_dim=0), "head_dim must be a positive integer"),
    (dict(norm_eps=-1.0), "norm_eps must be a positive number"),
    (dict(num_heads=4, value_dim=6), "num_heads=4 must divide value_dim=6"),
])
def test_bad_hyperparameters_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        RWKV7(D_MODEL, **bad)

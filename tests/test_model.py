from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import assert_cached_decoding_equals_full_forward
from zoo.blocks.registry import MIXERS
from zoo.model import LM

VOCAB = 97


def every_mixer_lm(**overrides) -> LM:
    """A hybrid with one layer of every registered mixer, so trunk-level decoding covers them all."""
    torch.manual_seed(0)
    layers = [{"name": name, "backend": "reference"} for name in sorted(MIXERS)]
    options = dict(d_model=32, n_layers=len(layers), layers=layers, mlp={"name": "swiglu"})
    options.update(overrides)
    return LM(VOCAB, **options)


def test_layers_cycle_over_depth():
    model = LM(VOCAB, d_model=16, n_layers=5, layers=["short_conv", {"name": "attention", "num_heads": 2}])
    kinds = [type(layer.mixer).__name__ for layer in model.layers]
    assert kinds == ["ShortConv", "Attention", "ShortConv", "Attention", "ShortConv"]
    assert model.layers[3].mixer.layer_idx == 3


def test_head_is_tied_to_the_embedding():
    model = LM(VOCAB, d_model=16)
    assert model.head.weight is model.embedding.weight


def test_residual_outputs_are_scaled_down_with_depth():
    torch.manual_seed(0)
    shallow = LM(VOCAB, d_model=64, n_layers=1, layers=["attention"])
    torch.manual_seed(0)
    deep = LM(VOCAB, d_model=64, n_layers=8, layers=["attention"])
    ratio = (shallow.layers[0].mixer.out_proj.weight.std() / deep.layers[0].mixer.out_proj.weight.std()).item()
    assert ratio == pytest.approx(8 ** 0.5, rel=1e-4)


def test_cached_decoding_through_the_trunk_equals_the_full_forward():
    assert_cached_decoding_equals_full_forward(every_mixer_lm().eval(), seq_len=15, prefill=6)


def test_greedy_generate_equals_repeated_full_forward():
    model = every_mixer_lm().eval()
    prompt = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(1))
    generated = model.generate(prompt, max_new_tokens=6)
    assert generated.shape == (3, 11)
    assert torch.equal(generated[:, :5], prompt)
    sequence = prompt
    with torch.no_grad():
        for _ in range(6):
            sequence = torch.cat([sequence, model(sequence)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, sequence)


def test_sampling_is_reproducible_with_a_generator():
    model = every_mixer_lm().eval()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    a = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(4))
    b = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_state_size_sums_the_layers():
    model = LM(VOCAB, d_model=16, n_layers=2, layers=["short_conv", "attention"])
    assert model.state_size(10) == 16 * 2 + 2 * 16 * 10


def test_mlp_inputs_reach_the_mlp():
    """The trunk forwards extra keyword inputs to the MLPs (room for memory-augmented FFNs)."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, memory=None):
            seen.append(memory)
            return torch.zeros_like(x)

    model = LM(VOCAB, d_model=16, n_layers=2, layers=["short_conv"], mlp={"name": "gelu"})
    for layer in model.layers:
        layer.mlp = Recorder()
    model(torch.zeros(1, 3, dtype=torch.long), memory="bank")
    assert seen == ["bank", "bank"]


@pytest.mark.parametrize("bad, message", [
    ({"layers": [{"name": "nope"}]}, "known mixers: .*attention"),
    ({"layers": [{"kernel_size": 3}]}, "'name' key"),
    ({"layers": []}, "at least one mixer"),
    ({"mlp": {"name": "moe"}}, "known mlps: gelu, hpm, swiglu"),
    ({"norm": "batchnorm"}, "norm='batchnorm'"),
    ({"n_layers": 0}, "n_layers"),
])
def test_bad_configs_fail_with_the_known_choices(bad, message):
    with pytest.raises(ValueError, match=message):
        LM(VOCAB, **bad)


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_decodes_like_its_full_forward(path):
    """Each shipped model (hybrids included) generates through its caches exactly as the full forward."""
    spec = yaml.safe_load(path.read_text())
    spec["d_model"] = 32
    torch.manual_seed(0)
    model = LM(VOCAB, **spec).eval()
    caches = assert_cached_decoding_equals_full_forward(model, seq_len=12, prefill=5)
    assert sum(c.numel_per_sequence() for c in caches) == model.state_size(12)


def test_last_only_logits_equal_the_last_position_of_the_full_forward():
    model = every_mixer_lm().eval()
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        last = model(tokens, last_only=True)
        full = model(tokens)
    assert last.shape == (2, 1, VOCAB)
    torch.testing.assert_close(last, full[:, -1:])

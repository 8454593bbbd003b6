"""minGRU / minLSTM: the parallel (log-space scan) forward equals the papers' sequential recurrence, decoding
token by token equals the parallel forward, extreme gates on long sequences stay finite, and the Triton path
equals the reference path for the whole block."""
import pytest
import torch

from ops._backend import triton_importable
from ops.testing import assert_close
from zoo.blocks.mingru import MinGRU, MinLSTM
from zoo.blocks.registry import MIXERS, build_mixer

BLOCKS = {"mingru": MinGRU, "minlstm": MinLSTM}


def g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def sequential_definition(block, x):
    """The papers' recurrence in linear space, one step at a time in float64, with the block's weights."""
    projected = (x.double() @ block.in_proj.weight.double().T)
    if isinstance(block, MinGRU):
        k, u = projected.chunk(2, dim=-1)
        z = torch.sigmoid(k)
        keep, write = 1 - z, z
    else:
        k_f, k_i, u = projected.chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        keep, write = f / (f + i), i / (f + i)
    candidate = g(u)
    h = torch.zeros(x.shape[0], block.d_hidden, dtype=torch.float64)
    states = []
    for t in range(x.shape[1]):
        h = keep[:, t] * h + write[:, t] * candidate[:, t]
        states.append(h)
    return torch.stack(states, 1) @ block.out_proj.weight.double().T


def make_block(name, d_model=8, expand=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_mixer(name, d_model, expand=expand, **kwargs)


def test_registered_under_config_names():
    assert MIXERS["mingru"] is MinGRU and MIXERS["minlstm"] is MinLSTM


@pytest.mark.parametrize("name", BLOCKS)
def test_parallel_forward_equals_sequential_recurrence(name):
    block = make_block(name)
    x = torch.randn(2, 33, 8)
    assert_close(f"{name} parallel vs sequential", block(x), sequential_definition(block, x), torch.float32)


@pytest.mark.parametrize("name", BLOCKS)
def test_decode_token_by_token_equals_parallel_forward(name):
    block = make_block(name, expand=1)
    x = torch.randn(3, 21, 8)
    with torch.no_grad():
        full = block(x)
        cache = block.allocate_cache(3)
        prefix = block(x[:, :8], cache)  # prefill, then decode the rest one token at a time
        steps = [block(x[:, t:t + 1], cache) for t in range(8, 21)]
    assert_close(f"{name} prefill", prefix, full[:, :8], torch.float32)
    assert_close(f"{name} decode", torch.cat(steps, 1), full[:, 8:], torch.float32)
    assert cache.seen == 21
    assert cache.numel_per_sequence() == block.state_size(21) == block.d_hidden == 8


@pytest.mark.parametrize("name", BLOCKS)
def test_extreme_gates_on_long_sequences_stay_finite_and_exact(name):
    block = make_block(name, d_model=4, expand=1)
    with torch.no_grad():
        block.in_proj.weight.mul_(300.0)  # pre-activations in the hundreds: gates saturate to 0/1 in float32
    x = torch.randn(2, 2048, 4, requires_grad=True)
    y = block(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all(), "non-finite output"
    for param_name, tensor in [("x", x), *block.named_parameters()]:
        assert torch.isfinite(tensor.grad).all(), f"non-finite gradient of {param_name}"
    assert_close(f"{name} extreme gates vs sequential", y.detach(), sequential_definition(block, x.detach()),
                 torch.float32)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="expand"):
        MinGRU(8, expand=0)
    with pytest.raises(ValueError, match="backend"):
        MinLSTM(8, backend="fastest")


@pytest.mark.skipif(not triton_importable(), reason="triton is not installed")
@pytest.mark.parametrize("name", BLOCKS)
def test_triton_block_equals_reference_block(name, triton_device):
    results = []
    for backend, device in (("triton", triton_device), ("reference", "cpu")):
        block = make_block(name, d_model=6, expand=2, backend=backend).to(device)
        x = torch.randn(2, 40, 6, generator=torch.Generator().manual_seed(3)).to(device).requires_grad_()
        y = block(x)
        y.square().sum().backward()
        results.append([("y", y), ("dx", x.grad)] + [(f"d {n}", p.grad) for n, p in block.named_parameters()])
    for (name_, actual), (_, expected) in zip(*results):
        assert_close(f"{name} {name_}", actual.detach().cpu(), expected.detach().cpu(), torch.float32)

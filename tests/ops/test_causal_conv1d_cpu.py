"""The compiled CPU causal conv1d (ops/causal_conv1d/cpu.py) against the reference: outputs, final states and the
gradient of x, weight and bias, for every width up to longer than the sequence, with and without bias and silu,
fp32 and bf16 inputs, x as the transposed view of (batch, L, dim) rows that the blocks pass, a contiguous
(batch, dim, L) x, and ragged lengths; and that ``backend="auto"`` on CPU picks it only where it applies."""
import importlib

import pytest
import torch

from ops.causal_conv1d import causal_conv1d
from ops.causal_conv1d.reference import causal_conv1d as reference_conv
from ops.testing import assert_close_everywhere
from tests.native import require_kernel, spy_on

cpu = importlib.import_module("ops.causal_conv1d.cpu")

require_kernel(cpu, "the CPU causal-conv1d kernel")


def block_layout(batch, dim, length, generator):
    """x as Mamba2 passes it: a (batch, dim, L) transposed view of a column slice of (batch, L, wider) rows."""
    rows = torch.randn(batch, length, dim + 7, generator=generator)
    return rows[..., 3:3 + dim].transpose(1, 2)


@pytest.mark.parametrize("width", [1, 2, 4, 9])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("layout", ["block rows", "contiguous"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compiled_matches_reference_with_gradients(width, activation, with_bias, layout, dtype):
    g = torch.Generator().manual_seed(width)
    batch, dim, length = 3, 13, 7  # width 9 reaches past the start of the sequence at every position
    x = block_layout(batch, dim, length, g) if layout == "block rows" else torch.randn(batch, dim, length, generator=g)
    tensors = {"x": x.to(dtype), "weight": torch.randn(dim, width, generator=g),
               "bias": torch.randn(dim, generator=g) if with_bias else None}
    weights = torch.randn(batch, dim, length, generator=g), torch.randn(batch, dim, width - 1, generator=g)
    results = []
    for conv in (cpu.causal_conv1d, reference_conv):
        leaves = {k: None if v is None else v.detach().clone().requires_grad_(True) for k, v in tensors.items()}
        if layout == "block rows":  # keep the strided view: it is what the kernel reads in place
            leaves["x"] = tensors["x"].detach().clone().requires_grad_(True)
        out, final = conv(**leaves, return_final_states=True, activation=activation)
        ((out.float() * weights[0]).sum() + (final.float() * weights[1]).sum()).backward()
        results.append({"out": out, "final states": final,
                        **{f"d {k}": v.grad for k, v in leaves.items() if v is not None}})
    for name, want in results[1].items():
        assert results[0][name].dtype == want.dtype, name
        if want.numel() == 0:  # width 1 keeps no final state
            assert results[0][name].shape == want.shape
            continue
        assert_close_everywhere(name, results[0][name].float(), want.float(), dtype)


def test_output_is_rows_like_the_input():
    """The output comes back as a (batch, dim, L) view of contiguous (batch, L, dim) rows, the layout the blocks
    transpose back to."""
    g = torch.Generator().manual_seed(5)
    x, weight = block_layout(2, 6, 10, g), torch.randn(6, 4, generator=g)
    out = cpu.causal_conv1d(x, weight, activation="silu")
    assert out.transpose(1, 2).is_contiguous()
    assert_close_everywhere("out", out, reference_conv(x, weight, activation="silu"), torch.float32)


def test_auto_picks_the_compiled_kernel_only_where_it_applies(monkeypatch):
    calls = spy_on(monkeypatch, cpu, "causal_conv1d")
    x, weight = torch.randn(1, 2, 5), torch.randn(2, 4)
    causal_conv1d(x, weight, backend="auto")
    assert len(calls) == 1
    causal_conv1d(x, weight, initial_states=torch.zeros(1, 2, 3), backend="auto")   # continuation: shifted.py
    causal_conv1d(x.double(), weight.double(), backend="auto")                        # float64: shifted.py
    causal_conv1d(x, weight, backend="reference")
    assert len(calls) == 1

"""Every fused kernel against its reference at training sizes, compiled on a GPU (the CPU runs skip this file).

The interpreter tests check the logic at tiny shapes; these check what only real tiles and real compilation
show (multi-tile carries, 32-bit offsets, autotuned configs), in bf16 as the kernels are used.
"""
import pytest
import torch

import ops
from ops.testing import assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="real-size kernel checks need a CUDA GPU")
DTYPE = torch.bfloat16


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def compare(name, run, inputs, scale=1.0):
    """run(backend, *inputs) -> tensor or tuple; compare outputs and every input gradient across backends."""
    results = {}
    for backend in ("reference", "triton"):
        xs = leaves(*inputs)
        out = run(backend, *xs)
        outs = out if isinstance(out, tuple) else (out,)
        outs = [o for o in outs if o is not None]
        grads_out = [torch.randn(o.shape, device=o.device, generator=torch.Generator(o.device).manual_seed(i)).to(o.dtype)
                     for i, o in enumerate(outs)]
        torch.autograd.backward(outs, grads_out)
        results[backend] = ([o.float() for o in outs], [x.grad.float() for x in xs])
    (ref_outs, ref_grads), (outs, grads) = results["reference"], results["triton"]
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert_close(f"{name} output {i}", o, r, DTYPE, scale)
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(f"{name} grad of input {i}", g, r, DTYPE, scale)


@pytest.mark.parametrize("batch, dim, length, state", [(2, 384, 2048, 16), (1, 200, 3001, 64)])
def test_selective_scan(batch, dim, length, state):
    g = torch.Generator("cuda").manual_seed(0)
    randn = lambda *s: torch.randn(*s, device="cuda", generator=g)
    u, z = randn(batch, dim, length).to(DTYPE), randn(batch, dim, length).to(DTYPE)
    delta = (randn(batch, dim, length) * 0.5 - 4).to(DTYPE)
    A = -torch.rand(dim, state, device="cuda", generator=g) * 4 - 0.5
    B, C = randn(batch, state, length).to(DTYPE), randn(batch, state, length).to(DTYPE)
    D, bias = randn(dim), randn(dim) * 0.1

    def run(backend, u, delta, A, B, C, D, z, bias):
        return ops.selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True,
                                  backend=backend)
    compare("selective_scan", run, (u, delta, A, B, C, D, z, bias))


@pytest.mark.parametrize("batch, length, width", [(4, 2048, 1536), (3, 1999, 700)])
def test_linear_recurrence(batch, length, width):
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(batch, length, width, device="cuda", generator=g).to(DTYPE)
    decay = torch.nn.functional.logsigmoid(torch.randn(batch, length, width, device="cuda", generator=g) + 3).to(DTYPE)
    h0 = torch.randn(batch, width, device="cuda", generator=g)

    def run(backend, x, decay, h0):
        return ops.linear_recurrence(x, decay, h0, output_final_state=True, backend=backend)
    compare("linear_recurrence", run, (x, decay, h0))


@pytest.mark.parametrize("batch, length, heads", [(2, 2048, 12), (1, 1000, 3)])
def test_based_attention(batch, length, heads):
    g = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(batch, length, heads, 16, device="cuda", generator=g).to(DTYPE)
    k = torch.randn(batch, length, heads, 16, device="cuda", generator=g).to(DTYPE)
    v = torch.randn(batch, length, heads, 64, device="cuda", generator=g).to(DTYPE)

    def run(backend, q, k, v):
        return ops.based_attention(q, k, v, use_norm=True, backend=backend)
    compare("based_attention", run, (q, k, v))

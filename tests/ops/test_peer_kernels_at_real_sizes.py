"""The new mixers' peer kernels (fla's chunk kernels, mamba-ssm's SSD) through ``ops.<name>(backend=<peer>)``
against our references at training sizes, compiled on a GPU (the CPU runs skip this file).

Inputs are bf16 as the blocks use them, with an initial state; outputs, final states and every input's gradient
are compared at their worst position (``assert_close_everywhere``), at 16k tokens and at a ragged length that is
no multiple of any chunk. An op this checkout does not have yet, or whose package is missing, is one skip line
naming what is missing. ``python -m zoo.bench gpu --phase proof`` runs this file with each peer kernel limited to
one autotune configuration (``ZOO_PEER_AUTOTUNE_CONFIGS=1``: correctness does not depend on the tuning).
"""
import pytest
import torch

from ops.testing import assert_close_everywhere
from zoo.bench.gpu_mixer_ops import MIXER_OPS, call, limit_peer_autotune, unavailable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="real-size peer kernel checks need a CUDA GPU")
DTYPE = torch.bfloat16
SIZES = {"long-B1-T16k": (1, 16384), "ragged-B2-T2000": (2, 2000)}


def outputs_and_grads(op, backend, inputs):
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    output, final = call(op, backend, leaves)
    gen = torch.Generator(output.device).manual_seed(1)
    torch.autograd.backward([output, final], [torch.randn(t.shape, device=t.device, generator=gen).to(t.dtype)
                                             for t in (output, final)])
    return [output.float(), final.float()], {k: v.grad.float() for k, v in leaves.items() if v.grad is not None}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", MIXER_OPS)
def test_peer_backend_matches_reference(name, size):
    op = MIXER_OPS[name]
    why = unavailable(op)
    if why:
        pytest.skip(why)
    limit_peer_autotune()
    inputs = op.make_inputs(*SIZES[size], device="cuda", dtype=DTYPE)
    (want, want_grads), (got, got_grads) = (outputs_and_grads(op, backend, inputs) for backend in ("reference", op.peer))
    for label, g, w in zip(("output", "final state"), got, want, strict=True):
        assert torch.isfinite(g).all(), f"{name} {size}: {label} of the {op.peer} backend is not finite"
        assert_close_everywhere(f"{name} {size} {label}", g, w, DTYPE, op.scale)
    assert got_grads.keys() == want_grads.keys(), f"{name}: gradients for {sorted(got_grads)} vs {sorted(want_grads)}"
    for key, w in want_grads.items():
        assert_close_everywhere(f"{name} {size} grad of {key}", got_grads[key], w, DTYPE, op.scale)
